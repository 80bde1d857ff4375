"""Two processes (torchrun, gloo on CPU): the same temperature every round, identical controllers,
and the same rewards, prompt groups and lengths in every rank's feedback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest


def torchrun(tmp_path: Path, *worker_args: str) -> None:
    """Run dist_worker.py on 2 processes (gloo on CPU); fail with its stderr if it fails."""
    worker = Path(__file__).with_name("dist_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",  # a local rendezvous on a free port chosen by torchrun
        str(worker),
        str(tmp_path),
        *worker_args,
    ]
    # A new session, so that a timeout kills torchrun *and* its workers (blocked in gloo otherwise).
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr[-4000:]


def ranks(out: Path) -> list[dict[str, Any]]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("ddp")
    torchrun(out)
    return ranks(out)


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_agree_on_every_temperature(ddp_run):
    assert [r["world_size"] for r in ddp_run] == [2, 2]
    assert len(ddp_run[0]["temperatures"]) == 2
    assert ddp_run[0]["temperatures"] == ddp_run[1]["temperatures"]
    assert ddp_run[0]["state"]["updates"] == 2
    assert ddp_run[0]["state"] == ddp_run[1]["state"]
    # The feedback's rewards, groups and lengths, against what each rank's reward function saw:
    # global row j (rank-major, as TRL gathers) is in group j // num_generations; a group's rows,
    # here split across the two ranks, share their prompt.
    g = ddp_run[0]["num_generations"]
    assert len(ddp_run[0]["feedbacks"]) == len(ddp_run[0]["rows"]) == 2
    for r in range(2):
        rows = ddp_run[0]["rows"][r] + ddp_run[1]["rows"][r]
        assert (
            len(ddp_run[0]["rows"][r]) == len(ddp_run[1]["rows"][r]) == g // 2
        )  # groups span ranks
        want = sorted(
            (j // g, float(np.float32(reward)), float(n)) for j, (_, n, reward) in enumerate(rows)
        )
        for rank in ddp_run:
            groups, rewards, lengths = rank["feedbacks"][r]
            got = sorted(zip(groups, rewards, lengths, strict=True))
            np.testing.assert_allclose(np.array(got), np.array(want), rtol=0, atol=1e-12)
        for j, (prompt, _, _) in enumerate(rows):
            assert prompt == rows[(j // g) * g][0]


@pytest.mark.slow
@pytest.mark.distributed
def test_fsdp2_sharded_run_equals_the_ddp_run(ddp_run, tmp_path):
    # FSDP2 (fully_shard, gloo) on 2 CPU ranks through the worker's test-only shim
    torchrun(tmp_path, "fsdp2")
    fsdp = ranks(tmp_path)
    assert [r["distributed_type"] for r in fsdp] == ["DistributedType.FSDP"] * 2
    assert all(r["model_class"].startswith("FSDP") for r in fsdp)  # sharded, not DDP
    assert ddp_run[0]["model_class"] == "DistributedDataParallel"
    for sharded, replicated in zip(fsdp, ddp_run, strict=True):
        assert sharded["temperatures"] == replicated["temperatures"]
        # the same controller state: decisions, counters, RNG exactly; the learned parameters
        # to float rounding (FSDP2 reduce-scatters gradients where DDP all-reduces them, so the
        # second round's policy can differ in the last bits: measured from bit-identical to
        # 7e-9 apart)
        state, reference = dict(sharded["state"]), dict(replicated["state"])
        params, expected = state.pop("params"), reference.pop("params")
        assert state == reference
        assert params.keys() == expected.keys()
        for name in params:
            # the parameters are EMAs of advantage-weighted float32 log-likelihoods (|l| ~ 1):
            # float32 rounding of the scores (~1e-7) bounds how far a reordered sum moves them
            np.testing.assert_allclose(params[name], expected[name], rtol=0, atol=1e-7)


@pytest.mark.slow
@pytest.mark.distributed
def test_processes_that_accelerate_runs_alone_are_refused(tmp_path):
    # torchrun on a CPU-only machine without use_cpu=True: accelerate (>= 1.13) makes each
    # process a single-process run; every rank must refuse at construction, naming use_cpu
    torchrun(tmp_path, "no-use-cpu")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    if ranks[0]["seen"] == 2:  # accelerate < 1.13 runs them together: nothing to refuse
        assert [r["error"] for r in ranks] == [None, None]
        return
    assert [r["seen"] for r in ranks] == [1, 1]
    for rank in ranks:
        assert "WORLD_SIZE=2" in rank["error"] and "use_cpu=True" in rank["error"]
