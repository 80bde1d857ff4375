"""GPU benchmark of virtual-temperature scoring (K = 10): the rows of issue #9's table.

Prints one JSON object per result, every row measured in this one process run:

    fused_head    TRL's fused LM-head forward (and forward + backward), 8192 tokens,
                  H in {896, 1536}, V = 151936, bf16: plain, and with a TileFold installed
                  (target: the fold costs <= 0.6x the plain forward)
    loglik        temperature_loglik on bf16 logits [1, 8192, 151936] against one fp32
                  log_softmax + gather (target: <= 1.0x)
    from_hidden   temperature_loglik_from_hidden against the plain fused forward
                  (target: <= 1.6x)
    trainer       GRPOTrainer against MetaGRPOTrainer (TAMPO) on a Qwen2-0.5B-shaped model
                  with random bf16 weights (built from a config, no download), 32 completions
                  of 256 tokens per step, the two alternated in this process, with the
                  fold implementation of the other rows (targets, docs/performance.md:
                  training part <= 1.02x, whole step <= 1.02x, peak memory <= 1.02x; the
                  ratio's 95% interval over the alternated pairs of runs resolves 2%)

Times: CUDA events around each call, the median of --repeats calls after --warmup calls.
Trainer: a callback times each optimizer step (synchronised), a wrapper times
``_generate_and_score_completions`` (generation, rewards, advantages) inside it; the
"training part" is the step minus that. The first step of each run is a warm-up and is
dropped. Peak memory: ``torch.cuda.max_memory_allocated()`` over a run (reset before it).

    python examples/bench_gpu.py              # one CUDA GPU, under 5 minutes
    python examples/bench_gpu.py --smoke      # tiny shapes on CPU, our kernel run by Triton's
                                              # interpreter: checks the code paths, times nothing

Without a CUDA GPU (and without --smoke) it prints one JSON object,
``{"benchmark": "gpu", "error": "..."}``, and exits with status 1.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and "--smoke" in sys.argv:
    # Triton reads this when it is first imported (TRL imports it): set it before anything else
    os.environ.setdefault("TRITON_INTERPRET", "1")

import argparse
import dataclasses
import gc
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from metactl.integrations.lab.testbed import make_tokenizer
from metactl.integrations.torch._dispatch import IMPLEMENTATIONS, Implementation


@dataclass
class Args:
    smoke: bool = False
    """tiny shapes on CPU (kernels under TRITON_INTERPRET=1); no timing meaning"""
    tokens: int = 8192
    """scored tokens of the fused_head, loglik and from_hidden rows"""
    vocab_size: int = 151936
    hidden_sizes: tuple[int, ...] = (896, 1536)
    chunk_size: int = 32768
    """vocabulary columns per tile of TRL's kernel (TRL's default)"""
    k: int = 10
    """virtual temperatures"""
    implementation: Implementation = "auto"
    """fold implementation of the first three rows: auto, torch or triton"""
    warmup: int = 2
    repeats: int = 7
    rows: tuple[str, ...] = ("fused_head", "loglik", "from_hidden", "trainer")
    trainer_steps: int = 6
    """timed steps per trainer run (after one warm-up step)"""
    trainer_repeats: int = 6
    """runs of each trainer, alternated (pairs: the interval of the ratio is over them)"""
    completions: int = 32
    completion_length: int = 256
    num_generations: int = 8
    seed: int = 0


SMOKE = dict(
    tokens=48,
    vocab_size=1000,
    hidden_sizes=(32,),
    chunk_size=384,
    implementation="triton",
    warmup=1,
    repeats=2,
    trainer_steps=1,
    trainer_repeats=1,
    completions=4,
    completion_length=6,
    num_generations=4,
)


def temperatures(k: int) -> list[float]:
    """K temperatures spread over TAMPO's 0.6 .. 1.5."""
    return [1.0] if k == 1 else [0.6 + 0.9 * i / (k - 1) for i in range(k)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device, args: Args) -> dict[str, Any]:
    """Median seconds of ``fn`` over ``args.repeats`` calls after ``args.warmup`` calls."""
    for _ in range(args.warmup):
        fn()
    sync(device)
    times = []
    peak = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    for _ in range(args.repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    return {
        "s": statistics.median(times),
        "times_s": [round(t, 6) for t in times],
        "peak_extra_mb": None if peak is None else round(peak / 2**20, 1),
    }


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def bench_fused_head(args: Args, device: torch.device, dtype: torch.dtype) -> None:
    for h in args.hidden_sizes:
        fused_head_row(args, device, dtype, h)
        free()


def fused_head_row(args: Args, device: torch.device, dtype: torch.dtype, h: int) -> None:
    from trl.kernels import ChunkedLogProbFunction

    from metactl.integrations.trl._seam_fused import TileFold

    temps = temperatures(args.k)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    hidden = torch.randn(args.tokens, h, generator=gen, device=device).to(dtype)
    weight = (torch.randn(args.vocab_size, h, generator=gen, device=device) * h**-0.5).to(dtype)
    targets = torch.randint(0, args.vocab_size, (args.tokens,), generator=gen, device=device)
    scored = torch.ones(args.tokens, dtype=torch.bool, device=device)

    def head(backward: bool) -> None:
        # as MetaGRPOTrainer's policy head: log-probs and entropy at the round temperature
        out = ChunkedLogProbFunction.apply(
            hidden, weight, None, targets, 1.0, args.chunk_size, None, 1.0, ("entropy",)
        )
        if backward:
            out[0].sum().backward()
            hidden.grad = weight.grad = None

    def folded(backward: bool) -> None:
        fold = TileFold(
            temps, scored, args.vocab_size, device=device, implementation=args.implementation
        )
        with fold.installed():
            head(backward)
        fold.scores()

    for backward in (False, True):
        hidden.requires_grad_(backward)
        weight.requires_grad_(backward)
        plain = timed(lambda b=backward: head(b), device, args)
        fold = timed(lambda b=backward: folded(b), device, args)
        emit(
            {
                "benchmark": "fused_head",
                "pass": "forward_backward" if backward else "forward",
                "hidden_size": h,
                "tokens": args.tokens,
                "vocab_size": args.vocab_size,
                "K": args.k,
                "implementation": args.implementation,
                "device": device_name(device),
                "plain_s": round(plain["s"], 6),
                "tile_fold_s": round(fold["s"], 6),
                "ratio": round(fold["s"] / plain["s"], 4),
                "fold_over_plain": round((fold["s"] - plain["s"]) / plain["s"], 4),
                "plain_times_s": plain["times_s"],
                "tile_fold_times_s": fold["times_s"],
                "plain_peak_extra_mb": plain["peak_extra_mb"],
                "tile_fold_peak_extra_mb": fold["peak_extra_mb"],
            }
        )


def bench_loglik(args: Args, device: torch.device, dtype: torch.dtype) -> None:
    from metactl.integrations.torch import temperature_loglik

    temps = temperatures(args.k)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    logits = (torch.randn(1, args.tokens, args.vocab_size, generator=gen, device=device) * 3).to(
        dtype
    )
    tokens = torch.randint(0, args.vocab_size, (1, args.tokens), generator=gen, device=device)
    mask = torch.ones(1, args.tokens, dtype=torch.bool, device=device)
    ours = timed(
        lambda: temperature_loglik(logits, tokens, mask, temps, implementation=args.implementation),
        device,
        args,
    )
    single = timed(
        lambda: torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens[..., None]),
        device,
        args,
    )
    emit(
        {
            "benchmark": "loglik",
            "shape": list(logits.shape),
            "dtype": str(dtype).removeprefix("torch."),
            "K": args.k,
            "implementation": args.implementation,
            "device": device_name(device),
            "temperature_loglik_s": round(ours["s"], 6),
            "log_softmax_gather_s": round(single["s"], 6),
            "ratio": round(ours["s"] / single["s"], 4),
            "temperature_loglik_times_s": ours["times_s"],
            "log_softmax_gather_times_s": single["times_s"],
            "temperature_loglik_peak_extra_mb": ours["peak_extra_mb"],
            "log_softmax_gather_peak_extra_mb": single["peak_extra_mb"],
        }
    )


def bench_from_hidden(args: Args, device: torch.device, dtype: torch.dtype) -> None:
    for h in args.hidden_sizes:
        from_hidden_row(args, device, dtype, h)
        free()


def from_hidden_row(args: Args, device: torch.device, dtype: torch.dtype, h: int) -> None:
    from trl.kernels import ChunkedLogProbFunction

    from metactl.integrations.torch import temperature_loglik_from_hidden

    temps = temperatures(args.k)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    hidden = torch.randn(1, args.tokens, h, generator=gen, device=device).to(dtype)
    weight = (torch.randn(args.vocab_size, h, generator=gen, device=device) * h**-0.5).to(dtype)
    tokens = torch.randint(0, args.vocab_size, (1, args.tokens), generator=gen, device=device)
    mask = torch.ones(1, args.tokens, dtype=torch.bool, device=device)

    def fused() -> None:
        with torch.no_grad():
            ChunkedLogProbFunction.apply(
                hidden[0], weight, None, tokens[0], 1.0, args.chunk_size, None, 1.0, ()
            )

    ours = timed(
        lambda: temperature_loglik_from_hidden(
            hidden, weight, None, tokens, mask, temps, implementation=args.implementation
        ),
        device,
        args,
    )
    plain = timed(fused, device, args)
    emit(
        {
            "benchmark": "from_hidden",
            "hidden_size": h,
            "tokens": args.tokens,
            "vocab_size": args.vocab_size,
            "K": args.k,
            "implementation": args.implementation,
            "device": device_name(device),
            "from_hidden_s": round(ours["s"], 6),
            "fused_forward_s": round(plain["s"], 6),
            "ratio": round(ours["s"] / plain["s"], 4),
            "from_hidden_times_s": ours["times_s"],
            "fused_forward_times_s": plain["times_s"],
            "from_hidden_peak_extra_mb": ours["peak_extra_mb"],
            "fused_forward_peak_extra_mb": plain["peak_extra_mb"],
        }
    )


# --- trainer row -----------------------------------------------------------------------------


def make_model(args: Args, vocab_size: int, device: torch.device) -> Any:
    """Qwen2-0.5B's shape (hidden 896, 24 layers, 14 heads, 2 kv heads, MLP 4864), random."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    hidden, mlp, layers, heads, kv_heads = (
        (32, 64, 2, 2, 1) if args.smoke else (896, 4864, 24, 14, 2)
    )
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=mlp,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    dtype = torch.float32 if args.smoke else torch.bfloat16
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(args.seed)
        return Qwen2ForCausalLM(config).to(dtype)


def reward(prompts: list[Any], completions: list[str], **kwargs: Any) -> list[float]:
    return [sum(ch.isdigit() for ch in c) / max(1, len(c)) for c in completions]


def train_run(meta: bool, args: Args, tok: Any, data: Any, device: torch.device) -> dict[str, Any]:
    """Step times, generate-and-score times and peak memory of one short training run."""
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    import metactl as mc
    from metactl.integrations.trl import MetaGRPOTrainer

    steps: list[float] = []
    scoring: list[float] = []

    class StepTimer(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, *a: Any, **kw: Any) -> None:
            sync(device)
            self.start = time.perf_counter()

        def on_step_end(self, *a: Any, **kw: Any) -> None:
            sync(device)
            steps.append(time.perf_counter() - self.start)

    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out,
            per_device_train_batch_size=args.completions,
            num_generations=args.num_generations,
            max_completion_length=args.completion_length,
            max_steps=1 + args.trainer_steps,
            learning_rate=1e-6,
            lr_scheduler_type="constant",
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            seed=args.seed,
            use_cpu=device.type == "cpu",
            bf16=device.type == "cuda",
            gradient_checkpointing=False,
            disable_tqdm=True,
            temperature=1.0,
        )
        common = dict(
            model=make_model(args, len(tok), device),
            reward_funcs=reward,
            args=config,
            train_dataset=data,
            processing_class=tok,
            callbacks=[StepTimer()],
        )
        trainer = (
            MetaGRPOTrainer(
                **common,
                controller=mc.TAMPO(seed=args.seed),
                fold_implementation=args.implementation,
            )
            if meta
            else GRPOTrainer(**common)
        )
        trainer.remove_callback(PrinterCallback)  # keep stdout to the JSON results
        generate = trainer._generate_and_score_completions

        def timed_generate(inputs: Any) -> Any:
            sync(device)
            t0 = time.perf_counter()
            result = generate(inputs)
            sync(device)
            scoring.append(time.perf_counter() - t0)
            return result

        trainer._generate_and_score_completions = timed_generate
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
        peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
        del trainer, common
        free()
    # step 0 warms up (allocator, kernel compilation); one generation per step
    step = steps[1:]
    train = [s - g for s, g in zip(steps[1:], scoring[1:], strict=True)]
    return {"step": step, "train": train, "peak": peak}


def bench_trainer(args: Args, device: torch.device) -> None:
    from datasets import Dataset

    tok = make_tokenizer(args.vocab_size)
    data = Dataset.from_dict({"prompt": [f"{i}+{i + 1}=" for i in range(512)]})
    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for r in range(args.trainer_repeats):
        for meta in (False, True) if r % 2 == 0 else (True, False):
            runs[meta].append(train_run(meta, args, tok, data, device))

    def median(meta: bool, key: str) -> float:
        return statistics.median(t for run in runs[meta] for t in run[key])

    step_plain, step_meta = median(False, "step"), median(True, "step")
    train_plain, train_meta = median(False, "train"), median(True, "train")
    # run r of each trainer ran side by side: the ratio of their medians, per pair
    pairs = [
        statistics.median(m["train"]) / statistics.median(p["train"])
        for p, m in zip(runs[False], runs[True], strict=True)
    ]
    from scipy import stats

    n = len(pairs)
    half = stats.t.ppf(0.975, n - 1) * statistics.stdev(pairs) / n**0.5 if n > 1 else float("nan")
    peaks = {m: max((run["peak"] or 0) for run in runs[m]) for m in (False, True)}
    emit(
        {
            "benchmark": "trainer",
            "model": "tiny (smoke)" if args.smoke else "Qwen2-0.5B shape, random bf16",
            "vocab_size": args.vocab_size,
            "completions": args.completions,
            "completion_length": args.completion_length,
            "steps_per_run": args.trainer_steps,
            "runs": args.trainer_repeats,
            "K": 10,
            "device": device_name(device),
            "grpo_step_s": round(step_plain, 4),
            "meta_step_s": round(step_meta, 4),
            "step_ratio": round(step_meta / step_plain, 4),
            "grpo_train_part_s": round(train_plain, 4),
            "meta_train_part_s": round(train_meta, 4),
            "train_part_ratio": round(train_meta / train_plain, 4),
            "train_part_ratio_pairs": [round(r, 4) for r in pairs],
            "train_part_ratio_ci95": [
                round(statistics.mean(pairs) - half, 4),
                round(statistics.mean(pairs) + half, 4),
            ],
            "implementation": args.implementation,
            "grpo_peak_mb": round(peaks[False] / 2**20, 1) if peaks[False] else None,
            "meta_peak_mb": round(peaks[True] / 2**20, 1) if peaks[True] else None,
            "peak_memory_ratio": round(peaks[True] / peaks[False], 4) if peaks[False] else None,
            "grpo_steps_s": [round(t, 4) for run in runs[False] for t in run["step"]],
            "meta_steps_s": [round(t, 4) for run in runs[True] for t in run["step"]],
        }
    )


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def main(args: Args) -> int:
    if not args.smoke and not torch.cuda.is_available():
        emit(
            {
                "benchmark": "gpu",
                "error": "no CUDA GPU available; run on one GPU, or pass --smoke for a CPU "
                "check of the code paths (Triton's interpreter, tiny shapes, no timings)",
            }
        )
        return 1
    device = torch.device("cpu" if args.smoke else "cuda")
    dtype = torch.bfloat16
    torch.manual_seed(args.seed)
    for row in args.rows:
        if row == "fused_head":
            bench_fused_head(args, device, dtype)
        elif row == "loglik":
            bench_loglik(args, device, dtype)
        elif row == "from_hidden":
            bench_from_hidden(args, device, dtype)
        elif row == "trainer":
            bench_trainer(args, device)
        else:
            raise ValueError(f"unknown row {row!r}")
        free()
    return 0


def parse_args(argv: list[str]) -> Args:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    for f in dataclasses.fields(Args):
        name = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(name, action="store_true")
        elif f.name == "implementation":
            parser.add_argument(name, choices=IMPLEMENTATIONS, default=f.default)
        elif isinstance(f.default, tuple):
            kind = type(f.default[0])
            parser.add_argument(name, type=kind, nargs="+", default=f.default)
        else:
            parser.add_argument(name, type=type(f.default), default=f.default)
    given = {k: v for k, v in vars(parser.parse_args(argv)).items()}
    if given["smoke"]:
        defaults = {f.name: f.default for f in dataclasses.fields(Args)}
        for key, value in SMOKE.items():
            if given[key] == defaults[key]:  # smoke shapes unless set on the command line
                given[key] = value
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}
    return Args(**given)


if __name__ == "__main__":
    sys.exit(main(parse_args(sys.argv[1:])))
