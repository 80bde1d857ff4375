"""Pure update rules: arrays in, arrays out. Each body reads like its docstring's equation.

Controllers are thin stateful shells around these functions.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
Normaliser = Literal["sparsemax", "softmax"]


def softmax(z: FloatArray, axis: int = -1) -> FloatArray:
    """softmax(z)_k = exp(z_k - max z) / sum_j exp(z_j - max z)."""
    with np.errstate(over="ignore"):  # z_k - max z = -inf gives exp = 0, as it should
        e = np.exp(z - np.max(z, axis=axis, keepdims=True))
    return np.asarray(e / np.sum(e, axis=axis, keepdims=True))


def sparsemax(z: FloatArray, axis: int = -1) -> FloatArray:
    """sparsemax(z)_k = max(z_k - tau(z), 0), the Euclidean projection of z onto the simplex.

    With z sorted decreasingly, k(z) = max{k : 1 + k z_(k) > sum_{j<=k} z_(j)} and
    tau(z) = (sum_{j<=k(z)} z_(j) - 1) / k(z)  (Martins & Astudillo, 2016).

    It is computed on z - max z (sparsemax is shift-invariant), so the support's entries lie
    in [-1, 0] and any finite z, however large, gives the exact projection.
    """
    z = np.moveaxis(np.asarray(z, dtype=np.float64), axis, -1)
    # Entries more than ~1.8e308 below the max become -inf: they are outside the support and
    # every sum over them is -inf (never inf - inf), so they get weight exactly 0.
    with np.errstate(over="ignore"):
        z = z - np.max(z, axis=-1, keepdims=True)
        z_sorted = np.sort(z, axis=-1)[..., ::-1]
        cumsum = np.cumsum(z_sorted, axis=-1)
        k = np.arange(1, z.shape[-1] + 1, dtype=np.float64)
        k_z = np.sum(
            k * z_sorted > cumsum - 1, axis=-1, keepdims=True
        )  # the support is a prefix; k_z >= 1
    tau = (np.take_along_axis(cumsum, k_z - 1, axis=-1) - 1) / k_z
    return np.moveaxis(np.maximum(z - tau, 0.0), -1, axis)


def arm_weights(loglik: FloatArray, normaliser: Normaliser) -> FloatArray:
    """w_ik = normaliser(l_1(i), ..., l_K(i))_k: each rollout's preference over the arms."""
    if normaliser == "sparsemax":
        return sparsemax(loglik, axis=1)
    return softmax(loglik, axis=1)


def arm_advantages(weights: FloatArray, advantages: FloatArray) -> FloatArray:
    """a_k = (1/N) sum_i w_ik A_i, the batch mean of the temperature-specific advantages."""
    return np.asarray(advantages @ weights / advantages.size)


def ema(average: FloatArray, batch: FloatArray, alpha: float) -> FloatArray:
    """abar <- (1 - alpha) abar + alpha a  (alpha weights the new batch)."""
    return (1 - alpha) * average + alpha * batch


def minmax_policy(average: FloatArray) -> FloatArray:
    """pi_k = m_k / sum_j m_j with m_k = (abar_k - min abar) / (max abar - min abar); uniform if flat."""
    low, high = np.min(average), np.max(average)
    if not high > low:
        return np.full(average.shape, 1.0 / average.size)
    m = (average - low) / (high - low)
    return np.asarray(m / np.sum(m))


def nucleus(probs: FloatArray, top_p: float) -> FloatArray:
    """Keep the smallest most-probable prefix whose mass reaches top_p, renormalised.

    ``top_p = 0`` keeps the argmax only (the first, in arm order, on ties).
    """
    order = np.argsort(-probs, kind="stable")
    mass = np.cumsum(probs[order])
    # A tolerance so that e.g. 0.1 + 0.2 + 0.4 still "reaches" 0.7 despite rounding.
    keep = int(np.searchsorted(mass, top_p - 1e-12)) + 1
    kept = np.zeros_like(probs)
    kept[order[:keep]] = probs[order[:keep]]
    if kept.sum() <= 0:  # all kept arms have probability 0 only if top_p = 0 and probs tie at 0
        kept[order[0]] = 1.0
    return np.asarray(kept / kept.sum())


def sample_categorical(probs: FloatArray, uniform: float) -> int:
    """Inverse-CDF draw: the first k with sum_{j<=k} p_j > uniform * sum_j p_j (uniform in [0, 1))."""
    cdf = np.cumsum(probs)
    k = int(np.searchsorted(cdf, uniform * cdf[-1], side="right"))
    return min(k, probs.size - 1)  # rounding can put uniform * total at the very end


def entropy(probs: FloatArray) -> float:
    """H(pi) = -sum_k pi_k log pi_k (0 log 0 = 0)."""
    p = probs[probs > 0]
    return float(-np.sum(p * np.log(p)))


def softmax_policy_gradient(logits: FloatArray, q: FloatArray) -> FloatArray:
    """dJ/dphi_k = pi_k (q_k - sum_j pi_j q_j) for J(phi) = sum_k softmax(phi)_k q_k."""
    pi = softmax(logits)
    return np.asarray(pi * (q - np.dot(pi, q)))


def softmax_entropy_gradient(logits: FloatArray) -> FloatArray:
    """dH/dphi_k = -pi_k (log pi_k - sum_j pi_j log pi_j) for H = -sum_k pi_k log pi_k."""
    pi = softmax(logits)
    log_pi = np.log(np.maximum(pi, 1e-300))
    return np.asarray(-pi * (log_pi - np.dot(pi, log_pi)))


def score_function_gradient(
    logits: FloatArray, arms: NDArray[np.int64], advantages: FloatArray
) -> FloatArray:
    """mean_n (r_n - b) (onehot(a_n) - pi): REINFORCE for a softmax policy over arms."""
    pi = softmax(logits)
    onehots = np.eye(logits.size)[arms]
    return np.asarray(np.mean(advantages[:, None] * (onehots - pi[None, :]), axis=0))


def gaussian_gradient(u: FloatArray, q: FloatArray, mu: float, sigma: float) -> tuple[float, float]:
    """Likelihood-ratio gradient of E_{u ~ N(mu, sigma^2)}[q(u)] in (mu, log sigma).

    grad mu        = mean_j (q_j - mean q) (u_j - mu) / sigma^2
    grad log sigma = mean_j (q_j - mean q) ((u_j - mu)^2 / sigma^2 - 1)
    """
    return gaussian_score_gradient(u, q - np.mean(q), mu, sigma)


def gaussian_score_gradient(
    u: FloatArray, advantages: FloatArray, mu: float, sigma: float
) -> tuple[float, float]:
    """REINFORCE for a Gaussian with a baseline already subtracted from ``advantages``.

    grad mu = mean_n A_n (u_n - mu) / sigma^2,  grad log sigma = mean_n A_n ((u_n - mu)^2 / sigma^2 - 1)
    """
    z = (u - mu) / sigma
    return float(np.mean(advantages * z / sigma)), float(np.mean(advantages * (z**2 - 1)))


def adam_ascent(
    params: FloatArray,
    grad: FloatArray,
    m: FloatArray,
    v: FloatArray,
    t: int,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """One Adam step up the gradient; t counts steps from 1. Returns (params, m, v)."""
    b1, b2 = betas
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad**2
    m_hat = m / (1 - b1**t)
    v_hat = v / (1 - b2**t)
    return params + lr * m_hat / (np.sqrt(v_hat) + eps), m, v
