"""A tiny causal LM built from a transformers config (no download)."""

from __future__ import annotations

from typing import Any, Literal

Size = Literal["tiny", "small", "medium"]

#: Architecture presets: (hidden size, layers, attention heads, MLP width).
SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (64, 2, 4, 256),
    "small": (128, 4, 4, 512),
    # About 34M parameters: worth a GPU (``--device cuda``), far too slow for the CPU default.
    "medium": (512, 8, 8, 2048),
}


def make_model(tokenizer: Any, *, seed: int = 0, size: Size = "tiny") -> Any:
    """Build a freshly initialised tiny Qwen2 causal LM for ``tokenizer``.

    Args:
        tokenizer: the tokenizer from :func:`make_tokenizer` (sets vocabulary and
            special-token ids).
        seed: initialisation seed; the same seed gives bit-identical weights.
        size: ``"tiny"`` (about 0.1M parameters, the default testbed), ``"small"``
            or ``"medium"`` (about 34M parameters, for a GPU).

    Returns:
        A ``transformers.Qwen2ForCausalLM`` in float32, in train mode.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if size not in SIZES:
        raise ValueError(f"make_model(size): expected one of {sorted(SIZES)}, got {size!r}")
    hidden, layers, heads, mlp = SIZES[size]
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=mlp,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        use_cache=True,
    )
    # transformers initialises weights from torch's *global* RNG. fork_rng saves the
    # caller's global RNG state and restores it on exit, so seeding here neither
    # depends on nor disturbs the caller's randomness.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model
