"""A tiny causal LM built from a transformers config (no download)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

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
        A ``transformers.Qwen2ForCausalLM`` in float32, in train mode, with the same
        weights on every machine.
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
    # transformers initialises weights from torch's *global* RNG, whose normal_ takes
    # another code path (and other rounding) on each CPU vector unit. fork_rng keeps the
    # caller's RNG untouched by that throwaway draw; the weights are then redrawn below.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    initialise(model, seed)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def initialise(model: Any, seed: int) -> None:
    """Draw ``model``'s weights as transformers does, from numpy: the same on every machine.

    Every weight matrix (embedding included) ~ N(0, initializer_range^2) from
    ``np.random.default_rng(seed)`` in parameter order, the padding token's embedding row
    zero; biases stay 0 and norm weights 1. numpy's generator is pure integer and
    float64 arithmetic, so no CPU vector unit changes a bit of it (torch's ``normal_``
    is vectorised differently on each).
    """
    import torch

    rng = np.random.default_rng(seed)
    std = model.config.initializer_range
    with torch.no_grad():
        for param in model.parameters():  # a tied weight is listed once
            if param.ndim == 2:
                param.copy_(torch.from_numpy(rng.standard_normal(tuple(param.shape)) * std))
        model.get_input_embeddings().weight[model.config.pad_token_id] = 0.0
