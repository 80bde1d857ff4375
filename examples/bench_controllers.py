"""Benchmark: controller update() and sample() latency (one JSON object per controller).

    python examples/bench_controllers.py [--rollouts 4096] [--repeats 300]

Median wall time on one core of ``update()`` on N rollouts x K arms (in prompt groups of 8,
with rewards and lengths) and of ``sample()``. Targets: TAMPO update < 2 ms and sample < 50 us.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
from collections.abc import Callable

import numpy as np

import metactl as mc


@dataclasses.dataclass
class Args:
    rollouts: int = 4096
    """N, rollouts per update"""
    arms: int = 10
    """K, arms of the discrete controllers (and virtual draws of the Box controller)"""
    repeats: int = 300
    """timed calls per measurement"""
    seed: int = 0


def median_us(fn: Callable[[], object], repeats: int) -> float:
    for _ in range(10):  # warm-up
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return float(np.median(times)) / 1e3


def make_feedback(d: mc.Decision, kind: type, columns: tuple[np.ndarray, ...]) -> mc.Feedback:
    """Feedback of ``kind`` on ``d``; a Counterfactual from (loglik, A, rewards, groups, lengths)."""
    if kind is mc.Counterfactual:
        loglik, advantages, rewards, groups, lengths = columns
        return mc.Counterfactual(
            d, loglik, advantages, rewards=rewards, groups=groups, lengths=lengths
        )
    if kind is mc.EntropyObservation:
        return mc.EntropyObservation(d, 1.2)
    return mc.Outcome(d, 0.5)


def median_update_us(
    ctl: mc.BaseController, build: Callable[[mc.Decision], mc.Feedback], repeats: int
) -> float:
    """Median time of ``update()`` on feedback built (untimed) for a fresh decision each call.

    A controller refuses feedback on a decision it has already learned from, so every timed
    update is on the decision of the ``sample()`` just before it.
    """
    times = []
    for i in range(10 + repeats):  # 10 warm-up calls
        feedback = build(ctl.sample())
        t0 = time.perf_counter_ns()
        ctl.update(feedback)
        if i >= 10:
            times.append(time.perf_counter_ns() - t0)
    return float(np.median(times)) / 1e3


def main(args: Args) -> None:
    rng = np.random.default_rng(args.seed)
    grid = mc.Discrete(np.linspace(0.6, 1.5, args.arms))
    controllers: dict[str, Callable[[], mc.BaseController]] = {
        "TAMPO": lambda: mc.TAMPO(grid, seed=args.seed),
        "TAMPO(softmax)": lambda: mc.TAMPO(grid, normaliser="softmax", seed=args.seed),
        "MetaGradient(Discrete)": lambda: mc.MetaGradient(grid, seed=args.seed),
        "MetaGradient(Box)": lambda: mc.MetaGradient(
            mc.Box(0.3, 3.0, log=True), num_virtual=args.arms, seed=args.seed
        ),
        "SlidingWindowUCB": lambda: mc.SlidingWindowUCB(grid, seed=args.seed),
        "EntropyTarget": lambda: mc.EntropyTarget(
            mc.Box(0.3, 3.0), vocab_size=151936, target=1.0, seed=args.seed
        ),
        "Informativeness": lambda: mc.Informativeness(grid, seed=args.seed),
        "Fixed": lambda: mc.Fixed(1.0),
    }
    for name, make in controllers.items():
        ctl = make()
        d = ctl.sample()
        m = d.virtual.size
        loglik = -rng.gamma(2.0, 0.5, size=(args.rollouts, m))
        advantages = rng.standard_normal(args.rollouts)
        rewards = rng.integers(0, 2, args.rollouts).astype(float)
        groups = np.arange(args.rollouts) // 8  # prompt groups of 8
        lengths = rng.integers(1, 200, args.rollouts).astype(float)
        feedback_type = ctl.accepts[0]

        build = functools.partial(
            make_feedback,
            kind=feedback_type,
            columns=(loglik, advantages, rewards, groups, lengths),
        )
        record = {
            "benchmark": "controllers",
            "controller": name,
            "feedback": feedback_type.__name__,
            "rollouts": args.rollouts if feedback_type is mc.Counterfactual else 1,
            "arms": m,
            "update_median_us": round(median_update_us(ctl, build, args.repeats), 2),
            "sample_median_us": round(median_us(ctl.sample, args.repeats), 2),
            "feedback_construction_median_us": round(
                median_us(
                    functools.partial(
                        mc.Counterfactual,
                        d,
                        loglik,
                        advantages,
                        rewards=rewards,
                        groups=groups,
                        lengths=lengths,
                    ),
                    args.repeats,
                ),
                2,
            )
            if feedback_type is mc.Counterfactual
            else None,
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Args):
        parser.add_argument(
            f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default
        )
    main(Args(**vars(parser.parse_args())))
