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


def group_log_likelihood_ratios(
    loglik: FloatArray, lengths: FloatArray, groups: NDArray[np.int64], played: int
) -> tuple[FloatArray, NDArray[np.int64]]:
    """log Lambda_bk = sum_{i in b} L_i (l_i(T_k) - l_i(T_s)): each group's joint likelihood ratio.

    ``loglik[i, k]`` is rollout i's mean token log-probability at arm k, ``lengths[i]`` its
    scored tokens L_i (so L_i l_i(T_k) is its total log-likelihood) and ``played`` the column
    s of the arm the rollouts were sampled at. Lambda_bk is the probability of group b's G
    completions, all together, at T_k relative to T_s. Returns ``(log_lambda [B, K], ids [B])``
    with the groups in increasing order of id. Each rollout's term is clipped to +-1e290, so
    that any finite scores (a mask fill of -3.4e38 times a long length) give finite sums.
    """
    ids, index = np.unique(groups, return_inverse=True)
    with np.errstate(over="ignore", invalid="ignore"):
        log_ratio = lengths[:, None] * (loglik - loglik[:, played : played + 1])
    log_ratio = np.clip(np.nan_to_num(log_ratio, nan=0.0), -1e290, 1e290)
    log_lambda = np.zeros((ids.size, loglik.shape[1]))
    np.add.at(log_lambda, index, log_ratio)
    return log_lambda, ids


def equal_reward_groups(
    rewards: FloatArray, groups: NDArray[np.int64], tol: float = 1e-8
) -> FloatArray:
    """e_b = 1 if every reward of group b lies within ``tol`` of the others (max - min <= tol), else 0.

    Such a group has zero GRPO advantage and teaches nothing; a group of one rollout counts as
    equal. Returns ``e [B]`` with the groups in increasing order of id.
    """
    ids, index = np.unique(groups, return_inverse=True)
    high = np.full(ids.size, -np.inf)
    low = np.full(ids.size, np.inf)
    np.maximum.at(high, index, rewards)
    np.minimum.at(low, index, rewards)
    return np.asarray(high - low <= tol, dtype=np.float64)


def informativeness_gains(
    log_lambda: FloatArray, equal: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """(d [K], ess [K]): each arm's gain in informative fraction over the played arm, and its ESS.

    With group weights self-normalised over the batch's B groups at each arm,
    w_bk = Lambda_bk / sum_c Lambda_ck (w_bs = 1/B at the played arm s), the informative
    fraction at T_k is U_k = 1 - sum_b w_bk e_b and

        d_k = U_k - U_s = -sum_b w_bk (e_b - ebar),      ebar = (1/B) sum_b e_b
        ess_k = 1 / sum_b w_bk^2                          (B at the played arm)
    """
    weights = softmax(log_lambda, axis=0)
    gains = -(equal - np.mean(equal)) @ weights
    return np.asarray(gains), np.asarray(1.0 / np.sum(weights**2, axis=0))


def sharpness_slopes(loglik: FloatArray, virtual: FloatArray, value: float) -> FloatArray:
    """g_i ~= dl_i/dbeta at beta_s = 1/value: each rollout's sharpness, from its virtual scores.

    The derivative at beta_s of the parabola in beta = 1/T through rollout i's scores at the
    three virtual arms nearest beta_s (its error is O(h^2) in the arms' spacing h; the
    secant of the two arms when only two are given). g_i > 0: rollout i is sharper than its
    positions' entropy predicts (it prefers a colder temperature). Exactly,
    g_i = (1/L_i) sum_t (z_{o_t} - E_{p_beta_s}[z_t]).
    """
    beta = 1.0 / np.asarray(virtual, dtype=np.float64)
    beta_s = 1.0 / value
    if np.unique(beta).size < 2:
        raise ValueError(
            f"sharpness_slopes: need at least two distinct virtual arms, got {list(virtual)}"
        )
    nearest = np.argsort(np.abs(beta - beta_s), kind="stable")
    _, first = np.unique(beta[nearest], return_index=True)
    pick = nearest[np.sort(first)][:3]  # the nearest distinct arms, nearest first
    x = beta[pick] - beta_s
    y = loglik[:, pick]
    if pick.size == 2:
        return np.asarray((y[:, 1] - y[:, 0]) / (x[1] - x[0]))
    x0, x1, x2 = x
    # derivative at 0 of the Lagrange parabola through (x_j, y_j)
    c0 = (-x1 - x2) / ((x0 - x1) * (x0 - x2))
    c1 = (-x0 - x2) / ((x1 - x0) * (x1 - x2))
    c2 = (-x0 - x1) / ((x2 - x0) * (x2 - x1))
    return np.asarray(c0 * y[:, 0] + c1 * y[:, 1] + c2 * y[:, 2])


def sharpness_advantage_covariance(sharpness: FloatArray, advantages: FloatArray) -> float:
    """C_g = (1/N) sum_i A_i g_i: the slope in beta = 1/T of TAMPO's batch signal, to first order.

    A policy-gradient estimate of d(pass rate)/d(1/T) at the sampling temperature: C_g > 0
    means good rollouts are the sharp ones, so TAMPO moves its policy toward colder arms.
    """
    return float(np.mean(advantages * sharpness))


def carry_beyond_reach(
    gains: FloatArray, reached: NDArray[np.bool_], values: FloatArray, played: int
) -> FloatArray:
    """Each arm's gain, with an arm out of reach credited the gain of the nearest reached arm
    between it and the played arm (walking outward from T_s in temperature order).

    d_k unchanged where reached_k; else d_k = d_j, j the reached arm on k's side of T_s that is
    nearest to k on the way from s (the played arm itself, d_s = 0, when none is).
    """
    order = np.argsort(values, kind="stable")
    start = int(np.flatnonzero(order == played)[0])
    out = np.asarray(gains, dtype=np.float64).copy()
    for side in (order[start + 1 :], order[:start][::-1]):
        carry = out[played]
        for k in side:
            if reached[k]:
                carry = out[k]
            else:
                out[k] = carry
    return out
