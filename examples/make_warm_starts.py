"""Rebuild the warm starts metactl ships (the documented ones), or check a rebuild.

    python examples/make_warm_starts.py            # retrain and write them into the package
    python examples/make_warm_starts.py --check    # retrain and compare with the shipped weights

Each is trained by the float64 recipe (integrations/lab/testbed/exact.py), which gives the
same weights on every CPU, and written as safetensors with its recipe in the file's metadata
and in manifest.json. One JSON line per warm start.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from metactl.integrations.lab.config import demo_config, load_config
from metactl.integrations.lab.testbed.shipped import (
    file_name,
    manifest,
    save_shipped,
    weights_sha256,
)
from metactl.integrations.lab.testbed.warmstart import WarmStartConfig, train_warm_start

HERE = Path(__file__).parent


@dataclass
class Args:
    check: bool = False
    """Rebuild into a temporary folder and compare with the shipped checksums."""


DOCUMENTED_CONFIGS = (
    "compare_all.yaml",
    "misconception_dev.yaml",
    "misconception_screen.yaml",
    "misconception_confirm.yaml",
)


def documented_warm_starts() -> list[WarmStartConfig]:
    """The warm starts of the demo and of every config whose results docs/results.md shows."""
    configs = [demo_config(), *(load_config(HERE / name) for name in DOCUMENTED_CONFIGS)]
    unique = {c.warm_start_config().key(): c.warm_start_config() for c in configs}
    return list(unique.values())


def main(args: Args) -> int:
    shipped = manifest()
    failures = 0
    for cfg in documented_warm_starts():
        model, meta = train_warm_start(cfg)
        name = file_name(cfg)
        if args.check:
            rebuilt = weights_sha256(model)
            expected = shipped.get(name, {}).get("weights_sha256")
            same = rebuilt == expected
            failures += not same
            print(json.dumps({"warm_start": name, "weights_sha256": rebuilt, "identical": same}))
        else:
            entry = save_shipped(cfg, model, meta)
            print(json.dumps({"warm_start": name, **entry["meta"], "sha256": entry["sha256"]}))
    return 1 if failures else 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare a rebuild with the shipped files")
    raise SystemExit(main(Args(**vars(p.parse_args()))))
