"""The lab: an application built on metactl for research on temperature control.

The tiny-LM GRPO testbed (:mod:`metactl.integrations.lab.testbed`), the experiment runner
behind ``metactl compare`` (:mod:`~metactl.integrations.lab.runner`, with one module per
piece: :mod:`~metactl.integrations.lab.device`, :mod:`~metactl.integrations.lab.grpo_args`,
:mod:`~metactl.integrations.lab.probe`, :mod:`~metactl.integrations.lab.recorder`,
:mod:`~metactl.integrations.lab.scheduling`), its validated config
(:mod:`~metactl.integrations.lab.config`), the run-folder format
(:mod:`~metactl.integrations.lab.rundir`), reports and figures
(:mod:`~metactl.integrations.lab.report`) and the ``metactl`` command line
(:mod:`~metactl.integrations.lab.cli`). It depends on the TRL integration, never the reverse.
Install with ``pip install "metactl[lab]"``; this package itself imports nothing heavy, so the
command line can say which extra is missing.
"""
