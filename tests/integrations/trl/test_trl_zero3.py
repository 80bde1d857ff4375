"""MetaGRPOTrainer under DeepSpeed ZeRO-3 (the ``zero3`` nox sessions install DeepSpeed).

ZeRO-3 partitions the weights from the moment the model is loaded, so the seam cannot be probed
at construction: MetaGRPOTrainer takes the release's fast seam there and probes it at the first
round, once DeepSpeed's engine gathers the weights in the forward. These runs use TRL's default
GRPOConfig (bf16 and gradient checkpointing as they default) plus a ZeRO-3 config, in one
process on DeepSpeed's CPU accelerator (gloo): several ranks need GPUs or oneCCL (DeepSpeed
computes its batch sizes for one process on CPU). Each run is a subprocess
(:mod:`zero3_worker`): DeepSpeed's process group and accelerate's state are process-wide.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("deepspeed", reason="DeepSpeed is installed by the zero3 nox sessions")

import torch
import trl
from packaging.version import Version
from test_trl_defaults import policy_scores
from transformers import AutoModelForCausalLM

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("zero3_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run(tmp_path: Path, mode: str, model_path: str) -> tuple[dict[str, Any], Path]:
    out = tmp_path / mode
    out.mkdir()
    env = {**os.environ, "MASTER_PORT": str(free_port())}
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(out), mode, model_path],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "result.json").read_text()), out


def weights(out: Path) -> dict[str, torch.Tensor]:
    loaded: dict[str, torch.Tensor] = torch.load(out / "weights.pt")
    return loaded


def test_fixed_under_zero3_trains_bit_identically_to_grpo_trainer(model_path, tmp_path):
    plain, plain_out = run(tmp_path, "grpo", model_path)
    meta, meta_out = run(tmp_path, "fixed", model_path)
    assert plain["error"] is None and meta["error"] is None
    assert any("probes it at the first round" in w for w in meta["warnings"])
    assert len(plain["logs"]) == 2 and meta["logs"] == plain["logs"]  # bit for bit
    want, got = weights(plain_out), weights(meta_out)
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    start = AutoModelForCausalLM.from_pretrained(model_path).state_dict()
    # it did train: the weights (bf16 under DeepSpeed's bf16) moved from the checkpoint's
    assert any(not torch.equal(start[k].to(torch.bfloat16), want[k]) for k in start)


def test_tampo_under_zero3_scores_each_round_with_that_rounds_policy(model_path, tmp_path):
    result, out = run(tmp_path, "tampo", model_path)
    assert result["error"] is None and result["steps"] == 2
    rounds = torch.load(out / "rounds.pt", weights_only=False)
    assert len(rounds) == 2
    for r in rounds:
        assert r["value"] == r["temperature"]
        assert all(w.dtype == torch.bfloat16 for w in r["weights"].values())
        policy = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16).eval()
        policy.load_state_dict(r["weights"])
        want = policy_scores(policy, r["batch"], r["virtual"], autocast=False)  # bf16 weights
        got = r["loglik"]
        assert got.shape == want.shape == (4, 10)
        nearest = torch.cdist(got, want).argmin(dim=1)  # TRL shuffles rows within a round
        assert sorted(nearest.tolist()) == list(range(4))
        error = float((got - want[nearest]).abs().max())
        # bf16 rounding (measured <= 4e-4), far below how much the arms differ on each row
        spread = float((want.max(1).values - want.min(1).values).min())
        assert error < 1e-3 and error < spread / 20


def test_a_seam_failing_its_first_round_probe_stops_the_run_before_any_update(model_path, tmp_path):
    result, out = run(tmp_path, "deaf", model_path)
    assert "fails its probe at the first round, before any update" in result["error"]
    assert result["steps"] == 0 and result["logs"] == []
    start = AutoModelForCausalLM.from_pretrained(model_path).state_dict()
    got = weights(out)  # DeepSpeed's bf16 holds the model in bf16: the checkpoint, rounded
    assert all(torch.equal(start[k].to(torch.bfloat16), got[k]) for k in start)


@pytest.mark.skipif(
    Version(trl.__version__) >= Version("1.14"),
    reason="TRL 1.14+ has no Liger loss module that keeps a temperature",
)
def test_liger_under_zero3_is_refused_at_construction(model_path, tmp_path):
    result, _ = run(tmp_path, "liger", model_path)
    assert "use_liger_kernel" in result["error"] and "ZeRO-3" in result["error"]
