"""Sanity simulations of mc.Informativeness against mc.TAMPO on frozen toy models, numpy only.

    python examples/informativeness_sanity.py [--seeds 10] [--steps 150]
    python examples/informativeness_sanity.py --learning --seeds 6

Each prompt has `length` positions with logits z[b, t, :] over a small vocabulary; a rollout
samples one token per position from softmax(z / T) and is rewarded when every token is the
answer (token 0), so its exact pass rate q_b(T) = prod_t softmax(z[b, t] / T)[0] and the
expected informative fraction U(T) = mean_b 1 - q_b^G - (1 - q_b)^G are known. Settings:

- random reward (p = 0.1, 0.5): rewards ignore the completions; no controller should drift
  from where it starts (the mean of the grid, from a uniform policy);
- competent: the answer is the clear mode; the pass rate peaks at the coldest arm, the
  informative fraction hot (near 1.5): Informativeness should go hot, TAMPO goes cold;
- hard: the answer is a weak mode; both peak at the coldest arm: both should go cold.

Prints one JSON object per (setting, grid, controller): the mean sampled temperature over all
rounds and over the last 50 with a 95% interval over seeds, and the argmax temperatures of the
exact pass rate and informative fraction.

``--learning`` runs a learning toy instead: tabular GRPO on the same model (the logits are the
parameters; each round, theta += lr * mean over the group of A_i (onehot(o_i) - p_T) / T), from
a "weak" start (the answer a weak mode everywhere: cold learns faster) and a "wrong" start (the
last position confidently wrong: hot learns faster). It prints each fixed temperature's and
each controller's AUC (the mean over rounds of the pass rate at T = 1) and mean sampled T.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

import numpy as np

import metactl as mc

GRIDS = {
    "paper": (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5),
    "wide": (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.8, 2.0),
}


@dataclasses.dataclass
class Args:
    seeds: int = 10
    steps: int = 150
    prompts: int = 16
    group_size: int = 8
    length: int = 4
    vocab: int = 8
    learning: bool = False
    """run the learning toy (tabular GRPO) instead of the frozen models"""
    lr: float = 0.5


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def make_logits(kind: str, args: Args, rng: np.random.Generator) -> np.ndarray:
    z = rng.normal(0.0, 1.0, (args.prompts, args.length, args.vocab))
    margin = (1.0, 2.0) if kind == "hard" else (5.0, 7.0)
    z[:, :, 0] += rng.uniform(*margin, (args.prompts, 1))
    return z


def exact_curves(z: np.ndarray, temps: tuple[float, ...], g: int) -> tuple[np.ndarray, np.ndarray]:
    q = np.stack([np.exp(log_softmax(z / t)[..., 0].sum(-1)) for t in temps])  # [K, B]
    return q.mean(1), np.mean(1 - q**g - (1 - q) ** g, axis=1)


def sample_tokens(z: np.ndarray, t: float, args: Args, rng: np.random.Generator) -> np.ndarray:
    """[B, G, L] tokens: G rollouts per prompt at temperature t."""
    cdf = np.cumsum(np.exp(log_softmax(z / t)), axis=-1)
    u = rng.random((args.prompts, args.group_size, args.length, 1))
    return np.asarray((u > cdf[:, None]).sum(-1).clip(max=args.vocab - 1))


def feedback(
    z: np.ndarray, d: mc.Decision, tokens: np.ndarray, rewards: np.ndarray, args: Args
) -> mc.Counterfactual:
    """The round's Counterfactual: exact mean log-likelihoods at every virtual T, GRPO advantages."""
    b, g, n = args.prompts, args.group_size, args.length
    loglik = np.stack(
        [
            np.take_along_axis(log_softmax(z / t)[:, None].repeat(g, 1), tokens[..., None], -1)[
                ..., 0
            ].mean(-1)
            for t in d.virtual
        ],
        axis=-1,
    ).reshape(b * g, -1)
    r = rewards.reshape(b, g)
    adv = ((r - r.mean(1, keepdims=True)) / (r.std(1, keepdims=True) + 1e-4)).reshape(-1)
    return mc.Counterfactual(
        d,
        loglik,
        adv,
        rewards=rewards,
        groups=np.repeat(np.arange(b), g),
        lengths=np.full(b * g, float(n)),
    )


def exact_match(tokens: np.ndarray) -> np.ndarray:
    return np.asarray((tokens == 0).all(-1).astype(float).reshape(-1))


def learning_start(kind: str, args: Args, rng: np.random.Generator) -> np.ndarray:
    z = rng.normal(0.0, 1.0, (args.prompts, args.length, args.vocab))
    if kind == "weak":
        z[:, :, 0] += rng.uniform(1.0, 2.0, (args.prompts, 1))
    else:  # "wrong": the answer is the clear mode except at the last position
        z[:, :, 0] += 5.0
        z[:, -1, 1] += 5.0 + rng.uniform(0.5, 2.0, args.prompts)
        z[:, -1, 0] -= 1.0
    return z


def learn(kind: str, controller: Any, args: Args, seed: int) -> tuple[float, float]:
    """(AUC, mean sampled T) of one tabular-GRPO run, at a fixed T (a float) or by a controller."""
    rng = np.random.default_rng(seed)
    theta = learning_start(kind, args, rng)
    curve, temps = [], []
    for _ in range(args.steps):
        d = None if isinstance(controller, float) else controller.sample()
        t = controller if d is None else d.value
        temps.append(t)
        tokens = sample_tokens(theta, t, args, rng)
        rewards = exact_match(tokens)
        fb = feedback(theta, d, tokens, rewards, args) if d is not None else None
        if fb is not None:
            controller.update(fb)
        r = rewards.reshape(args.prompts, args.group_size)
        adv = (r - r.mean(1, keepdims=True)) / (r.std(1, keepdims=True) + 1e-4)
        # GRPO on the logits: theta += lr * mean_group A_i (onehot(o_i) - p_T) / T
        p = np.exp(log_softmax(theta / t))
        onehot = np.eye(args.vocab)[tokens]
        theta = theta + args.lr * (adv[..., None, None] * (onehot - p[:, None])).mean(1) / t
        curve.append(np.exp(log_softmax(theta)[..., 0].sum(-1)).mean())  # pass rate at T = 1
    return float(np.mean(curve)), float(np.mean(temps))


def main_learning(args: Args) -> None:
    grid = GRIDS["wide"]
    for kind in ("weak", "wrong"):
        runs: list[tuple[str, Any]] = [
            (f"fixed {t:g}", t) for t in (0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 2.0)
        ]
        runs += [("Informativeness", mc.Informativeness), ("TAMPO", mc.TAMPO)]
        for name, what in runs:
            out = np.array(
                [
                    learn(kind, what if isinstance(what, float) else what(grid, seed=s), args, s)
                    for s in range(args.seeds)
                ]
            )
            print(
                json.dumps(
                    {
                        "learning": kind,
                        "controller": name,
                        "seeds": args.seeds,
                        "auc": round(float(out[:, 0].mean()), 4),
                        "auc_ci95": round(
                            float(1.96 * out[:, 0].std(ddof=1) / np.sqrt(len(out))), 4
                        ),
                        "mean_T": round(float(out[:, 1].mean()), 3),
                    }
                ),
                flush=True,
            )


def main(args: Args) -> None:
    if args.learning:
        main_learning(args)
        return
    settings = [("random p=0.1", "competent", 0.1), ("random p=0.5", "competent", 0.5)]
    settings += [("competent", "competent", None), ("hard", "hard", None)]
    for name, kind, p in settings:
        for grid_name, grid in GRIDS.items():
            for controller in ("Informativeness", "TAMPO"):
                means, lasts, argmax_p, argmax_u = [], [], [], []
                for seed in range(args.seeds):
                    rng = np.random.default_rng(1000 + seed)  # the task's and the rollouts'
                    z = make_logits(kind, args, rng)
                    pass_rate, informative = exact_curves(z, grid, args.group_size)
                    argmax_p.append(grid[int(np.argmax(pass_rate))])
                    argmax_u.append(grid[int(np.argmax(informative))])
                    ctl = getattr(mc, controller)(grid, seed=seed)  # the controller's own RNG
                    temps = []
                    for _ in range(args.steps):
                        d = ctl.sample()
                        temps.append(d.value)
                        tokens = sample_tokens(z, d.value, args, rng)
                        n = tokens.shape[0] * tokens.shape[1]
                        rewards = exact_match(tokens) if p is None else (rng.random(n) < p) * 1.0
                        ctl.update(feedback(z, d, tokens, rewards, args))
                    means.append(np.mean(temps))
                    lasts.append(np.mean(temps[-50:]))
                ci = 1.96 / np.sqrt(args.seeds)
                print(
                    json.dumps(
                        {
                            "setting": name,
                            "grid": grid_name,
                            "controller": controller,
                            "seeds": args.seeds,
                            "mean_T": round(float(np.mean(means)), 3),
                            "mean_T_ci95": round(float(ci * np.std(means, ddof=1)), 3),
                            "last50_T": round(float(np.mean(lasts)), 3),
                            "last50_T_ci95": round(float(ci * np.std(lasts, ddof=1)), 3),
                            "uniform_T": round(float(np.mean(grid)), 3),
                            "pass_rate_argmax_T": None if p is not None else argmax_p,
                            "informative_argmax_T": None if p is not None else argmax_u,
                        }
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Args):
        if isinstance(f.default, bool):
            parser.add_argument(f"--{f.name}", action="store_true")
        else:
            parser.add_argument(f"--{f.name}", type=type(f.default), default=f.default)
    main(Args(**vars(parser.parse_args())))
