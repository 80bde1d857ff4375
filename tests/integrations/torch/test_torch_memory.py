"""Extra memory of temperature_loglik stays bounded as K grows (measured in fresh subprocesses).

Method: the child allocates the logits, resets its peak resident set size (writing 5 to
/proc/self/clear_refs, so that peaks from imports do not count), runs the op once and reads the
peak (VmHWM); extra memory = peak - RSS before the call. torch's CPU
allocations are plain malloc/mmap, so they show in RSS (tracemalloc would not see them).

The child runs with a fixed glibc mmap threshold (MALLOC_MMAP_THRESHOLD_): by default glibc
raises the threshold after the first large free, so later 2 MiB chunks come from the brk heap
and its fragmentation adds 2 to 14 MiB to the peak from one run to the next (seen on CI). With
the threshold fixed every chunk is its own mapping, and the peak is the op's live memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CHILD = r"""
import json, sys
import torch
torch.set_num_threads(1)
from metactl.integrations.torch import temperature_loglik

def status_bytes(field):
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field))
    return int(line.split()[1]) * 1024

k, naive = int(sys.argv[1]), sys.argv[2] == "naive"
gen = torch.Generator().manual_seed(0)
n, vocab = 1024, 8192  # 32 MiB of fp32 logits
logits = torch.randn(1, n, vocab, generator=gen)
tokens = torch.randint(0, vocab, (1, n), generator=gen)
mask = torch.ones(1, n)
temps = [0.5 + 0.1 * i for i in range(k)]
small = (logits[:, :8, :64].clone(), tokens[:, :8] % 64, mask[:, :8])
temperature_loglik(*small, temps)  # warm-up: lazily loaded code and thread pools are not "extra"
torch.log_softmax(small[0] / 2.0, -1)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak to the current RSS
before = status_bytes("VmRSS:")
if naive:
    out = torch.stack([torch.log_softmax(logits / t, -1).gather(-1, tokens[..., None])[..., 0]
                       for t in temps], -1)
else:
    out = temperature_loglik(logits, tokens, mask, temps, chunk_size=64)  # 2 MiB chunks
peak = status_bytes("VmHWM:")
print(json.dumps({"extra": peak - before, "logits": logits.numel() * 4}))
"""


def extra_memory(k: int, naive: bool = False) -> tuple[int, int]:
    """(peak extra bytes, logits bytes) of one call in a fresh process."""
    args = [sys.executable, "-c", CHILD, str(k), "naive" if naive else "op"]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120, env=env)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["extra"], result["logits"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_extra_memory_is_bounded_and_independent_of_k() -> None:
    one, logits_bytes = extra_memory(1)
    many, _ = extra_memory(32)
    naive, _ = extra_memory(4, naive=True)
    assert many < logits_bytes / 4, (many, logits_bytes)
    assert many - one < 4 * 2**20, (one, many)  # K = 32 costs the same few MiB as K = 1
    assert naive > logits_bytes, naive  # the method sees what a naive stack allocates
