"""Benchmark: controller update() and sample() latency (one JSON object per controller).

    python examples/bench_controllers.py [--rollouts 4096] [--repeats 300]

Median wall time on one core of ``update()`` on N rollouts x K arms and of
``sample()``. Targets: TAMPO update < 2 ms and sample < 50 us.
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
        "Fixed": lambda: mc.Fixed(1.0),
    }
    for name, make in controllers.items():
        ctl = make()
        d = ctl.sample()
        m = d.virtual.size
        loglik = -rng.gamma(2.0, 0.5, size=(args.rollouts, m))
        advantages = rng.standard_normal(args.rollouts)
        feedback_type = ctl.accepts[0]
        if feedback_type is mc.Counterfactual:
            feedback: mc.Feedback = mc.Counterfactual(d, loglik, advantages)
        elif feedback_type is mc.EntropyObservation:
            feedback = mc.EntropyObservation(d, 1.2)
        else:
            feedback = mc.Outcome(d, 0.5)
        record = {
            "benchmark": "controllers",
            "controller": name,
            "feedback": feedback_type.__name__,
            "rollouts": args.rollouts if feedback_type is mc.Counterfactual else 1,
            "arms": m,
            "update_median_us": round(
                median_us(functools.partial(ctl.update, feedback), args.repeats), 2
            ),
            "sample_median_us": round(median_us(ctl.sample, args.repeats), 2),
            "feedback_construction_median_us": round(
                median_us(
                    functools.partial(mc.Counterfactual, d, loglik, advantages), args.repeats
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
