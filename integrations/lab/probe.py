"""The Figure-4 probe: sample rollouts at the run's temperature and score their preferred one.

The probe reads the model and never feeds training: it samples from a private
``torch.Generator`` (:func:`probe_generator`), so the training run's random streams are the
same with or without it.
"""

from __future__ import annotations

from typing import Any

from metactl.integrations.lab.rundir import PREFERRED_BOUNDS
from metactl.integrations.lab.testbed.tasks import Task

PROBE_PROMPTS = 16
"""Training prompts in a probe batch (each sampled ``num_generations`` times)."""

PROBE_SEED_OFFSET = 10_000
"""A run's probe generator is seeded ``PROBE_SEED_OFFSET + seed``."""


def probe_generator(seed: int) -> Any:
    """The private ``torch.Generator`` of the probe of the run with seed ``seed``."""
    import torch

    return torch.Generator().manual_seed(PROBE_SEED_OFFSET + seed)


def sample_tokens(
    model: Any,
    ids: Any,
    *,
    temperature: float,
    max_new_tokens: int,
    eos: int,
    pad: int,
    generator: Any,
) -> tuple[Any, Any, Any]:
    """Sample a continuation of every row of ``ids`` with the model's KV cache.

    One forward of the prompts, then one forward of each new token against the cache. Rows
    have no padding (equal-length prompts), so no attention mask is needed. A row that has
    sampled ``eos`` continues with ``pad``; sampling stops once every row has, or after
    ``max_new_tokens``. Call it under ``torch.no_grad()`` with the model in eval mode.

    Args:
        model: a causal LM.
        ids: prompt token ids ``[N, P]`` on the model's device.
        temperature: the sampling temperature.
        max_new_tokens: the most tokens sampled per row.
        eos: the end-of-sequence token id.
        pad: the token id after ``eos``.
        generator: the CPU ``torch.Generator`` every draw comes from.

    Returns:
        ``(ids, logits, mask)``: the prompts and completions ``[N, P + L]``, the untempered
        logits ``[N, L, V]`` each completion token was drawn from, and the completion mask
        ``[N, L]`` (1 for tokens up to and including ``eos``).
    """
    import torch

    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    logits_cols, mask_cols = [], []
    out = model(input_ids=ids, use_cache=True)
    for step in range(max_new_tokens):
        logits = out.logits[:, -1].float()
        logits_cols.append(logits)
        probs = torch.softmax(logits / temperature, dim=-1)
        nxt = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(ids.device)
        mask_cols.append(~done)
        nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        done = done | (nxt == eos)
        if bool(done.all()) or step == max_new_tokens - 1:
            break  # no forward for a token that would not be sampled
        # `cache` is transformers' current name of the KV cache (`past_key_values` is deprecated).
        # A release without it has no `out.cache`: that fails loudly, never decodes uncached.
        out = model(input_ids=nxt[:, None], cache=out.cache, use_cache=True)
    return ids, torch.stack(logits_cols, dim=1), torch.stack(mask_cols, dim=1).to(torch.float32)


def sample_rollouts(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    num_generations: int,
    temperature: float,
    max_new_tokens: int,
    generator: Any,
) -> tuple[list[str], Any, Any, Any]:
    """Sample ``num_generations`` completions per prompt with a private ``torch.Generator``.

    Prompts must have equal token length (true for every testbed task).

    Returns:
        ``(texts, logits, tokens, mask)``: decoded completions and, for scoring,
        untempered logits ``[N, L, V]`` of the completion positions, the completion
        tokens ``[N, L]`` and their mask ``[N, L]`` (tokens up to and including ``<eos>``).
    """
    import torch

    enc = tokenizer(prompts, add_special_tokens=False, return_tensors="pt")["input_ids"]
    ids = enc.repeat_interleave(num_generations, dim=0).to(model.device)
    plen = ids.shape[1]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ids, _, mask = sample_tokens(
                model,
                ids,
                temperature=temperature,
                max_new_tokens=max_new_tokens,
                eos=tokenizer.eos_token_id,
                pad=tokenizer.pad_token_id,
                generator=generator,
            )
            # Scored by one forward of the whole sequence, as the trainer scores rollouts.
            full = model(input_ids=ids).logits.float()
    finally:
        model.train(was_training)
    tokens = ids[:, plen:]
    logits = full[:, plen - 1 : -1]
    texts = tokenizer.batch_decode(tokens, skip_special_tokens=True)
    return texts, logits, tokens, mask


def probe_rollouts(
    model: Any,
    tokenizer: Any,
    task: Task,
    *,
    temperature: float,
    num_generations: int,
    generator: Any,
) -> dict[str, Any]:
    """Advantages and preferred temperatures of a probe batch (the paper's Figure 4 data).

    Uses the first :data:`PROBE_PROMPTS` training prompts, ``num_generations`` each.
    Rollouts with zero advantage (groups solved or failed alike) are dropped.
    """
    import torch

    from metactl.integrations.torch import grpo_advantages, preferred_temperature

    rows = task.train.select(range(PROBE_PROMPTS))
    texts, logits, tokens, mask = sample_rollouts(
        model,
        tokenizer,
        list(rows["prompt"]),
        num_generations=num_generations,
        temperature=temperature,
        max_new_tokens=task.max_completion_length,
        generator=generator,
    )
    columns = {k: [v for v in rows[k] for _ in range(num_generations)] for k in rows.column_names}
    prompts = columns.pop("prompt")
    rewards = torch.tensor(task.reward_func(prompts=prompts, completions=texts, **columns))
    adv = grpo_advantages(rewards, num_generations)
    pref = preferred_temperature(logits, tokens, mask, bounds=PREFERRED_BOUNDS)
    keep = (adv.abs() > 1e-8) & torch.isfinite(pref)
    return {
        "temperature": temperature,
        "reward": float(rewards.mean()),
        "advantage": [round(float(a), 5) for a in adv[keep]],
        "preferred": [round(float(p), 5) for p in pref[keep]],
    }
