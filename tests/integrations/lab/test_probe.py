"""The probe's KV-cache sampler draws from a full forward's logits and stops at eos."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from metactl.integrations.lab.probe import sample_rollouts, sample_tokens  # noqa: E402
from metactl.integrations.lab.testbed import make_model, make_tokenizer  # noqa: E402

PROMPTS = ["12+34=", "56+07=", "99+01="]


def _prompt_ids(tok: Any, generations: int) -> Any:
    enc = tok(PROMPTS, add_special_tokens=False, return_tensors="pt")["input_ids"]
    return enc.repeat_interleave(generations, dim=0)


def test_cached_sampling_logits_equal_a_full_forward_of_the_sampled_sequence() -> None:
    tok = make_tokenizer()
    model = make_model(tok, seed=0).eval()
    ids = _prompt_ids(tok, 4)
    plen = ids.shape[1]
    with torch.no_grad():
        seq, logits, mask = sample_tokens(
            model,
            ids,
            temperature=1.3,
            max_new_tokens=8,
            eos=tok.eos_token_id,
            pad=tok.pad_token_id,
            generator=torch.Generator().manual_seed(0),
        )
        full = model(input_ids=seq).logits.float()[:, plen - 1 : -1]
    assert seq.shape[1] > plen and torch.equal(seq[:, :plen], ids)
    assert logits.shape == full.shape and mask.shape == seq[:, plen:].shape
    assert torch.allclose(logits, full, atol=1e-5)
    # The scores sample_rollouts returns come from that full forward, for the same draws.
    texts, scored, tokens, scored_mask = sample_rollouts(
        model,
        tok,
        PROMPTS,
        num_generations=4,
        temperature=1.3,
        max_new_tokens=8,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(tokens, seq[:, plen:]) and torch.equal(scored_mask, mask)
    assert torch.allclose(scored, full, atol=1e-5)
    assert texts == tok.batch_decode(tokens, skip_special_tokens=True)


def test_cached_sampling_stops_at_eos() -> None:
    """Rows end at their first eos (pad after it); sampling stops once every row has ended."""
    tok = make_tokenizer()
    model = make_model(tok, seed=0)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    ids = _prompt_ids(tok, 2)
    rows = ids.shape[0]
    early = torch.arange(rows) % 2 == 0
    calls = []

    def force_eos(module: Any, inputs: Any, out: Any) -> Any:
        # Forward k gives the logits of completion token k: eos is barred, except at token 2
        # for the even rows and at token 4 for every row.
        calls.append(out.shape[1])
        k = len(calls)
        bias = torch.full((rows,), -1e4)
        if k == 2:
            bias[early] = 1e4
        elif k == 4:
            bias[:] = 1e4
        out = out.clone()
        out[:, :, eos] += bias[:, None]
        return out

    handle = model.lm_head.register_forward_hook(force_eos)
    try:
        with torch.no_grad():
            seq, logits, mask = sample_tokens(
                model.eval(),
                ids,
                temperature=1.0,
                max_new_tokens=10,
                eos=eos,
                pad=pad,
                generator=torch.Generator().manual_seed(1),
            )
    finally:
        handle.remove()
    # One forward of the prompt, then one per new token (no re-forward of the sequence).
    assert calls == [ids.shape[1], 1, 1, 1]
    tokens = seq[:, ids.shape[1] :]
    assert tokens.shape == (rows, 4) and logits.shape[:2] == (rows, 4)
    assert torch.all(tokens[early, 1] == eos) and torch.all(tokens[early, 2:] == pad)
    assert torch.all(tokens[~early, 3] == eos) and not torch.any(tokens[~early, :3] == eos)
    assert mask[early].tolist() == [[1.0, 1.0, 0.0, 0.0]] * int(early.sum())
    assert mask[~early].tolist() == [[1.0, 1.0, 1.0, 1.0]] * int((~early).sum())


def test_sampling_stops_at_max_new_tokens_without_an_extra_forward() -> None:
    tok = make_tokenizer()
    model = make_model(tok, seed=0).eval()
    calls = []
    handle = model.lm_head.register_forward_hook(lambda m, i, o: calls.append(o.shape[1]))
    try:
        with torch.no_grad():
            _, _, mask = sample_tokens(
                model,
                _prompt_ids(tok, 1),
                temperature=1.0,
                max_new_tokens=1,
                eos=tok.eos_token_id,
                pad=tok.pad_token_id,
                generator=torch.Generator().manual_seed(0),
            )
    finally:
        handle.remove()
    assert len(calls) == 1 and mask.shape == (len(PROMPTS), 1)
