"""Overhead of MetaGRPOTrainer (TAMPO, K = 10) over a plain GRPOTrainer, per seam.

The same tiny model (hidden 64, 2 layers) with a realistic vocabulary (32768 tokens), the same
data, seed and config; GRPOTrainer, MetaGRPOTrainer on the installed TRL's own seam, and
MetaGRPOTrainer on the ``hidden-states`` fallback seam, alternated in one process run. Prints one
JSON object per seam: the fastest wall time and CPU time (of this process) over the repeats of a
short training run of each, every run's wall time, peak resident-memory growth during a run, and
the ratios to GRPOTrainer (target for the release's own seam: <= 1.05 on CPU)::

    python examples/bench_trl_overhead.py
    python examples/bench_trl_overhead.py --steps 6 --repeats 5 --vocab-size 65536
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch
import trl
from datasets import Dataset
from transformers import PreTrainedTokenizerFast, PrinterCallback, Qwen2Config, Qwen2ForCausalLM
from trl import GRPOConfig, GRPOTrainer

import metactl as mc
from metactl.integrations.lab.testbed import make_tokenizer
from metactl.integrations.trl import MetaGRPOTrainer
from metactl.integrations.trl._seam_hidden import HiddenStatesSeam

FALLBACK = "hidden-states"


@dataclass
class Args:
    vocab_size: int = 32768
    steps: int = 4
    repeats: int = 5
    batch: int = 8
    completion_length: int = 32
    seed: int = 0
    threads: int = 1
    hidden_size: int = 64
    layers: int = 2


def make_model(tok: PreTrainedTokenizerFast, args: Args) -> Qwen2ForCausalLM:
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=args.hidden_size,
        intermediate_size=4 * args.hidden_size,
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        return Qwen2ForCausalLM(config)


def reward(prompts: list[Any], completions: list[str], **kwargs: Any) -> list[float]:
    return [sum(ch.isdigit() for ch in c) / max(1, len(c)) for c in completions]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run(
    kind: str, args: Args, tok: PreTrainedTokenizerFast, data: Dataset
) -> tuple[float, float, int]:
    """Wall time and CPU time of one training run, and its peak RSS growth over its start.

    ``kind``: ``"grpo"`` (GRPOTrainer), ``"own"`` (MetaGRPOTrainer on the seam it chose) or
    :data:`FALLBACK` (the same, with the fallback seam swapped in as construction would choose it
    on a TRL without a fast seam).
    """
    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out,
            per_device_train_batch_size=args.batch,
            num_generations=args.batch,
            max_completion_length=args.completion_length,
            max_steps=args.steps,
            learning_rate=1e-4,
            lr_scheduler_type="constant",
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            seed=args.seed,
            use_cpu=True,
            bf16=False,
            gradient_checkpointing=False,
            disable_tqdm=True,
            temperature=1.0,
        )
        common = dict(
            model=make_model(tok, args),
            reward_funcs=reward,
            args=config,
            train_dataset=data,
            processing_class=tok,
        )
        if kind == "grpo":
            trainer = GRPOTrainer(**common)
        else:
            trainer = MetaGRPOTrainer(**common, controller=mc.TAMPO(seed=args.seed))
        if kind == FALLBACK:
            own = trainer._seam
            own.close()
            trainer._seam = HiddenStatesSeam(trainer, trainer.model, own.temperature, "auto")
        trainer.remove_callback(PrinterCallback)  # keep stdout to the JSON result
        gc.collect()
        base, peak, done = rss_bytes(), [0], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], rss_bytes())
                time.sleep(0.002)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start, cpu_start = time.perf_counter(), time.process_time()
        trainer.train()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        done.set()
        sampler.join()
        del trainer
        gc.collect()
    return elapsed, cpu, max(peak[0] - base, 1)


def main(args: Args) -> None:
    torch.set_num_threads(args.threads)
    tok = make_tokenizer(args.vocab_size)
    data = Dataset.from_dict({"prompt": [f"{i}+{i + 1}=" for i in range(256)]})
    run("grpo", args, tok, data)  # warm-up (imports, allocator)
    kinds = ["grpo", "own", FALLBACK]
    times: dict[str, list[float]] = {k: [] for k in kinds}
    cpus: dict[str, list[float]] = {k: [] for k in kinds}
    mems: dict[str, list[int]] = {k: [] for k in kinds}
    for r in range(args.repeats):
        for kind in kinds[r % 3 :] + kinds[: r % 3]:  # each kind in each position in turn
            t, c, m = run(kind, args, tok, data)
            times[kind].append(t)
            cpus[kind].append(c)
            mems[kind].append(m)
    with tempfile.TemporaryDirectory() as out:
        probe = MetaGRPOTrainer(
            model=make_model(tok, args),
            reward_funcs=reward,
            args=GRPOConfig(output_dir=out, use_cpu=True, bf16=False, report_to="none"),
            train_dataset=data,
            processing_class=tok,
        )
        own_seam = probe.seam
    # the fastest run of each is the least disturbed by the machine (a shared VM varies +-15%)
    t_plain, c_plain, m_plain = min(times["grpo"]), min(cpus["grpo"]), max(mems["grpo"])
    for kind in ("own", FALLBACK):
        t_meta, c_meta, m_meta = min(times[kind]), min(cpus[kind]), max(mems[kind])
        print(
            json.dumps(
                {
                    "benchmark": "trl_overhead",
                    "trl": trl.__version__,
                    "seam": own_seam if kind == "own" else FALLBACK,
                    "vocab_size": args.vocab_size,
                    "hidden_size": args.hidden_size,
                    "layers": args.layers,
                    "steps": args.steps,
                    "repeats": args.repeats,
                    "batch": args.batch,
                    "completion_length": args.completion_length,
                    "K": 10,
                    "grpo_time_s": round(t_plain, 4),
                    "meta_time_s": round(t_meta, 4),
                    "time_ratio": round(t_meta / t_plain, 4),
                    "grpo_cpu_s": round(c_plain, 4),
                    "meta_cpu_s": round(c_meta, 4),
                    "cpu_time_ratio": round(c_meta / c_plain, 4),
                    "grpo_times_s": [round(t, 3) for t in times["grpo"]],
                    "meta_times_s": [round(t, 3) for t in times[kind]],
                    "grpo_peak_rss_growth_mb": round(m_plain / 2**20, 2),
                    "meta_peak_rss_growth_mb": round(m_meta / 2**20, 2),
                    "peak_memory_ratio": round(m_meta / m_plain, 4),
                }
            )
        )


def parse_args(argv: list[str]) -> Args:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Args):
        parser.add_argument(
            "--" + f.name.replace("_", "-"), type=type(f.default), default=f.default
        )
    return Args(**vars(parser.parse_args(argv)))


if __name__ == "__main__":
    main(parse_args(sys.argv[1:]))
