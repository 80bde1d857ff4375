"""Benchmark: virtual-temperature log-likelihoods vs the naive stack of K log-softmaxes.

Prints one JSON object per configuration (V, dtype, K), every configuration measured in this
one process run, so the ratios compare like with like:

    (a) temperature_loglik                  chunked, every row read once for all K temperatures
    (b) naive                               stack of K log_softmax(logits.float() / T).gather(...)
    (c) single                              log_softmax(logits.float()).gather(...): what a GRPO
                                            step already pays for its own log-probs
    (d) from_hidden                         temperature_loglik_from_hidden, next to the plain LM
                                            head projection F.linear(hidden, weight) ("project")

Peak extra memory. On CUDA: torch.cuda.max_memory_allocated() minus the memory allocated before
the call. On CPU (Linux): the process's peak resident set size (VmHWM in /proc/self/status),
reset before each call by writing "5" to /proc/self/clear_refs, minus the resident size before
the call; freed heap memory is first handed back to the OS with glibc's malloc_trim(0) so that a
call cannot reuse pages left over by the previous one. torch's CPU tensors are plain
malloc/mmap allocations, so this counts them; it also counts anything else the call touches,
so it is an upper bound. Times are one call each after a small warm-up (wall clock).

    python examples/bench_loglik.py            # full size: V in {32000, 151936}, 4096 tokens
    python examples/bench_loglik.py --quick    # small sizes, seconds
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from metactl.integrations.torch import temperature_loglik, temperature_loglik_from_hidden


@dataclass
class Args:
    vocab_sizes: tuple[int, ...] = (32000, 151936)
    """vocabulary sizes V"""
    tokens: int = 4096
    """scored tokens B * L (all scored)"""
    batch: int = 8
    """rows B (L = tokens / batch)"""
    ks: tuple[int, ...] = (1, 10)
    """numbers of virtual temperatures K"""
    dtypes: tuple[str, ...] = ("bfloat16", "float32")
    """logits dtypes"""
    hidden_size: int = 256
    """H of the LM head for (d); small so that the CPU matmul stays cheap"""
    device: str = "cpu"
    """torch device"""
    threads: int = 1
    """torch CPU threads (0: torch's default); 1 keeps timings stable on a shared machine"""
    seed: int = 0
    """seed of the torch.Generator that makes the inputs"""
    repeats: int = 3
    """calls per measurement: the fastest time and the largest peak are reported"""
    quick: bool = False
    """small sizes (V in {1000, 4096}, 512 tokens) for a smoke run"""


def parse_args() -> Args:
    """Build an argparse parser from the fields of :class:`Args` (CleanRL style)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for field in dataclasses.fields(Args):
        default = field.default
        flag = f"--{field.name.replace('_', '-')}"
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", default=default)
        elif isinstance(default, tuple):
            parser.add_argument(flag, nargs="+", type=type(default[0]), default=list(default))
        else:
            parser.add_argument(flag, type=type(default), default=default)
    ns = vars(parser.parse_args())
    args = Args(**{k: tuple(v) if isinstance(v, list) else v for k, v in ns.items()})
    if args.quick:
        args = dataclasses.replace(args, vocab_sizes=(1000, 4096), tokens=512)
    return args


class PeakMemory:
    """Peak extra bytes of a call: CUDA allocator stats, or the process's RSS high-water mark."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.libc = None if self.cuda else ctypes.CDLL("libc.so.6")

    def _status(self, key: str) -> int:
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith(key))
        return int(line.split()[1]) * 1024

    def start(self) -> int:
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return torch.cuda.memory_allocated()
        assert self.libc is not None
        self.libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        return self._status("VmRSS:")

    def peak(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        return self._status("VmHWM:")


def measure(fn: Callable[[], object], mem: PeakMemory, repeats: int) -> tuple[float, int]:
    """(fastest seconds, largest peak extra bytes) over ``repeats`` calls of ``fn``.

    The fastest call is the least disturbed by other load on the machine.
    """
    times, peaks = [], []
    for _ in range(repeats):
        before = mem.start()
        start = time.perf_counter()
        out = fn()
        if mem.cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        peaks.append(mem.peak() - before)
        del out
    return min(times), max(peaks)


def naive(logits: torch.Tensor, tokens: torch.Tensor, temps: list[float]) -> torch.Tensor:
    """(b): ``[B, K]`` mean of ``log_softmax(z / T).gather(o)``, one full log-softmax per T."""
    per_t = [
        torch.log_softmax(logits.float() / t, dim=-1).gather(-1, tokens[..., None])[..., 0]
        for t in temps
    ]
    return torch.stack(per_t, dim=-1).mean(dim=1)


def single(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(c): the one fp32 gather log-softmax a GRPO step already pays."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens[..., None])[..., 0]


def temperatures(k: int) -> list[float]:
    """K temperatures spread over TAMPO's 0.6 .. 1.5 (1.0 for K = 1)."""
    return [1.0] if k == 1 else [0.6 + 0.9 * i / (k - 1) for i in range(k)]


def warm_up(args: Args, device: torch.device) -> None:
    """Run every measured op once on tiny inputs (lazily loaded code is not extra memory)."""
    for name in args.dtypes:
        z = torch.randn(2, 4, 64, device=device).to(getattr(torch, name))
        o, m = torch.zeros(2, 4, dtype=torch.long, device=device), torch.ones(2, 4, device=device)
        temperature_loglik(z, o, m, [1.0, 2.0])
        naive(z, o, [1.0, 2.0])
        single(z, o)
        h = torch.randn(2, 4, 8, device=device).to(z.dtype)
        w = torch.randn(64, 8, device=device).to(z.dtype)
        F.linear(h, w)
        temperature_loglik_from_hidden(h, w, None, o, m, [1.0, 2.0])


def bench_config(
    args: Args, vocab: int, dtype_name: str, mem: PeakMemory, device: torch.device
) -> list[dict[str, object]]:
    """All measurements of one (V, dtype), one JSON-ready dict per K."""
    dtype = getattr(torch, dtype_name)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    shape = (args.batch, args.tokens // args.batch)
    logits = (torch.randn(*shape, vocab, generator=gen, device=device) * 3).to(dtype)
    tokens = torch.randint(0, vocab, shape, generator=gen, device=device)
    mask = torch.ones(shape, device=device)
    t_single, m_single = measure(lambda: single(logits, tokens), mem, args.repeats)
    rows = []
    for k in args.ks:
        temps = temperatures(k)
        t_a, m_a = measure(
            lambda temps=temps: temperature_loglik(logits, tokens, mask, temps), mem, args.repeats
        )
        t_b, m_b = measure(lambda temps=temps: naive(logits, tokens, temps), mem, args.repeats)
        rows.append({"k": k, "a": (t_a, m_a), "b": (t_b, m_b)})
    logits_bytes = logits.numel() * logits.element_size()
    hidden = torch.randn(*shape, args.hidden_size, generator=gen, device=device).to(dtype)
    weight = (torch.randn(vocab, args.hidden_size, generator=gen, device=device) * 0.1).to(dtype)
    t_proj, m_proj = measure(lambda: F.linear(hidden, weight), mem, args.repeats)
    out = []
    for row in rows:
        temps = temperatures(row["k"])
        t_d, m_d = measure(
            lambda temps=temps: temperature_loglik_from_hidden(
                hidden, weight, None, tokens, mask, temps
            ),
            mem,
            args.repeats,
        )
        (t_a, m_a), (t_b, m_b) = row["a"], row["b"]
        out.append(
            {
                "V": vocab,
                "tokens": args.tokens,
                "K": row["k"],
                "dtype": dtype_name,
                "device": str(device),
                "threads": torch.get_num_threads(),
                "logits_MB": round(logits_bytes / 2**20, 1),
                "loglik_s": round(t_a, 4),
                "naive_s": round(t_b, 4),
                "single_s": round(t_single, 4),
                "from_hidden_s": round(t_d, 4),
                "project_s": round(t_proj, 4),
                "loglik_MB": round(m_a / 2**20, 1),
                "naive_MB": round(m_b / 2**20, 1),
                "single_MB": round(m_single / 2**20, 1),
                "from_hidden_MB": round(m_d / 2**20, 1),
                "project_MB": round(m_proj / 2**20, 1),
                "time_loglik/naive": round(t_a / t_b, 3),
                "time_loglik/single": round(t_a / t_single, 3),
                "time_from_hidden/project": round(t_d / t_proj, 3),
                "mem_loglik/naive": round(m_a / max(m_b, 1), 4),
                "mem_loglik/logits": round(m_a / logits_bytes, 4),
                "mem_from_hidden/logits": round(m_d / logits_bytes, 4),
            }
        )
    return out


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    mem = PeakMemory(device)
    warm_up(args, device)
    for vocab in args.vocab_sizes:
        for dtype_name in args.dtypes:
            for result in bench_config(args, vocab, dtype_name, mem, device):
                print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
