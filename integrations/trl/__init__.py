"""TAMPO for TRL: ``MetaGRPOTrainer``, a ``trl.GRPOTrainer`` taking ``controller=``.

Switching from GRPOTrainer is one import and one argument::

    import metactl as mc
    from metactl.integrations.trl import MetaGRPOTrainer

    trainer = MetaGRPOTrainer(model=..., reward_funcs=..., args=GRPOConfig(...),
                              train_dataset=..., controller=mc.TAMPO(seed=0))
    trainer.train()          # logs meta/temperature, meta/policy_entropy, ... and meta/policy

See ``docs/trl.md``.

Raises:
    metactl.DependencyNotInstalled: if trl is not installed (``pip install "metactl[trl]"``).
"""

from metactl.errors import require

require("trl", "trl")

from ._checkpoint import CONTROLLER_FILE  # noqa: E402
from .trainer import MetaGRPOTrainer, check_temperature_controller  # noqa: E402

__all__ = ["CONTROLLER_FILE", "MetaGRPOTrainer", "check_temperature_controller"]
