"""Two processes (torchrun, gloo on CPU): the same temperature every round, identical controllers,
and the same rewards, prompt groups and lengths in every rank's feedback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_agree_on_every_temperature(tmp_path):
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
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert len(ranks[0]["temperatures"]) == 2
    assert ranks[0]["temperatures"] == ranks[1]["temperatures"]
    assert ranks[0]["state"]["updates"] == 2
    assert ranks[0]["state"] == ranks[1]["state"]
    # The feedback's rewards, groups and lengths, against what each rank's reward function saw:
    # global row j (rank-major, as TRL gathers) is in group j // num_generations; a group's rows,
    # here split across the two ranks, share their prompt.
    g = ranks[0]["num_generations"]
    assert len(ranks[0]["feedbacks"]) == len(ranks[0]["rows"]) == 2
    for r in range(2):
        rows = ranks[0]["rows"][r] + ranks[1]["rows"][r]
        assert len(ranks[0]["rows"][r]) == len(ranks[1]["rows"][r]) == g // 2  # groups span ranks
        want = sorted(
            (j // g, float(np.float32(reward)), float(n)) for j, (_, n, reward) in enumerate(rows)
        )
        for rank in ranks:
            groups, rewards, lengths = rank["feedbacks"][r]
            got = sorted(zip(groups, rewards, lengths, strict=True))
            np.testing.assert_allclose(np.array(got), np.array(want), rtol=0, atol=1e-12)
        for j, (prompt, _, _) in enumerate(rows):
            assert prompt == rows[(j // g) * g][0]
