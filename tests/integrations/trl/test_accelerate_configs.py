"""The accelerate configs docs/trl.md promises are files accelerate reads as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("accelerate")
from accelerate.commands.config.config_args import ClusterConfig
from accelerate.utils import DistributedType

CONFIGS = Path(__file__).resolve().parents[3] / "examples" / "accelerate_configs"


@pytest.mark.parametrize(
    ("name", "kind", "zero_stage"),
    [
        ("multi_gpu", DistributedType.MULTI_GPU, None),
        ("deepspeed_zero2", DistributedType.DEEPSPEED, 2),
        ("deepspeed_zero3", DistributedType.DEEPSPEED, 3),
        ("vllm_colocate", DistributedType.MULTI_GPU, None),
    ],
)
def test_accelerate_reads_the_config(name: str, kind: DistributedType, zero_stage: int | None):
    path = CONFIGS / f"{name}.yaml"
    config = ClusterConfig.from_yaml_file(str(path))
    assert config.distributed_type == kind
    assert config.mixed_precision == "bf16" and config.num_machines == 1
    assert config.deepspeed_config.get("zero_stage") == zero_stage
    assert f"--config_file examples/accelerate_configs/{name}.yaml" in path.read_text()
