"""A character-level tokenizer built locally (no download)."""

from __future__ import annotations

from typing import Any

#: Characters every testbed task is written in: digits, operators and a few letters.
CHARS: str = "0123456789+-*=,:;() <>abcdefghijklmnopqrstuvwxyz"
PAD, EOS, BOS = "<pad>", "<eos>", "<bos>"


def make_tokenizer(vocab_size: int | None = None) -> Any:
    """Build the testbed's character-level tokenizer.

    Every character of :data:`CHARS` is one token; ``<pad>``, ``<bos>`` and ``<eos>``
    are special tokens (ids 0, 1, 2). Nothing is downloaded, and the result is the
    same on every call. Prompts are encoded without special tokens; the warm start
    teaches the model to end an answer with ``<eos>``.

    Args:
        vocab_size: pad the vocabulary with filler tokens ``<tN>`` up to this size (benchmarks
            use it to give a tiny model a realistic LM-head width, e.g. 151936); None keeps the
            characters only.

    Returns:
        A ``transformers.PreTrainedTokenizerFast`` with ``pad_token``, ``bos_token``
        and ``eos_token`` set and left padding (what generation needs).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {PAD: 0, BOS: 1, EOS: 2}
    for ch in CHARS:
        vocab[ch] = len(vocab)
    if vocab_size is not None and vocab_size < len(vocab):
        raise ValueError(f"make_tokenizer(vocab_size): at least {len(vocab)}, got {vocab_size}")
    for i in range(len(vocab), vocab_size or 0):
        vocab[f"<t{i}>"] = i
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=PAD))
    # One token per character, spaces included.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        padding_side="left",
        model_max_length=128,
    )
    return tok
