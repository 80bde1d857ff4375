"""The ``"fused-tiles"`` seam's pieces (TRL 1.15-1.16 internals), checked against direct computations.

Skipped on a TRL without the fused chunked LM head's torch tiles (the matrix runs it where it
exists); the seam's choice on every release is tested in test_trl_matrix.py.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import types

import pytest
import torch

pytest.importorskip("trl")
chunked_logprob = pytest.importorskip("trl.kernels.chunked_logprob")
if "_forward_tile" not in vars(chunked_logprob):
    pytest.skip("this TRL's fused LM head has no torch tiles", allow_module_level=True)

from transformers import Qwen2Config, Qwen2ForCausalLM  # noqa: E402
from trl.kernels import ChunkedLogProbFunction  # noqa: E402
from trl.trainer.utils import add_fused_lm_head  # noqa: E402

from metactl.integrations.torch._dispatch import Implementation  # noqa: E402
from metactl.integrations.trl._seam_fused import (  # noqa: E402
    FusedTileSeam,
    RoundTemperature,
    TileFold,
    check_kernel,
)

CPU = torch.device("cpu")


def test_round_temperature_is_read_at_division_time():
    t = RoundTemperature(0.5)
    assert 1 / t == 2.0
    t.value = 2.0
    assert 1 / t == 0.5 and float(t) == 2.0


def reference_logp(z: torch.Tensor, targets: torch.Tensor, temps: list[float]) -> torch.Tensor:
    """``[N, K]`` float64 ``log softmax(z / T_k)[target]``, written from the definition."""
    z = z.double()
    return torch.stack(
        [torch.log_softmax(z / t, -1).gather(-1, targets[:, None])[:, 0] for t in temps], -1
    )


def check_fold_of_kernel_tiles(
    n: int,
    temps: list[float],
    dtype: torch.dtype,
    softcap: float | None,
    scale: float,
    *,
    unscored: slice = slice(0, 0),
    implementation: Implementation = "torch",
) -> None:
    """TRL's kernel on ``n`` random rows (4-column tiles) with a fold installed: the fold's
    scores and TRL's own log-probs (at 0.8) against float64 from the definition."""
    gen = torch.Generator().manual_seed(0)
    hidden_size, vocab = 8, 11
    hidden = torch.randn(n, hidden_size, generator=gen).to(dtype)
    weight = torch.randn(vocab, hidden_size, generator=gen).to(dtype)
    bias = torch.randn(vocab, generator=gen).to(dtype)
    targets = torch.randint(0, vocab, (n,), generator=gen)
    scored = torch.rand(n, generator=gen) < 0.7
    scored[unscored] = False
    fold = TileFold(temps, scored, vocab_size=vocab, device=CPU, implementation=implementation)
    with fold.installed():
        logp = ChunkedLogProbFunction.apply(
            hidden, weight, bias, targets, 0.8, 4, softcap, scale, ()
        )[0]
    got = fold.scores()

    # the logits as the model computes them in its dtype (bf16 logits are rounded to bf16)
    z = (hidden @ weight.t() + bias).double() * scale
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    tol = 1e-5 if dtype == torch.float32 else 1e-4
    assert got.shape == (int(scored.sum()), 3) and got.dtype == torch.float32
    torch.testing.assert_close(
        got.double(), reference_logp(z, targets, temps)[scored], atol=tol, rtol=tol
    )
    # TRL's own output is untouched by the fold (still at its own temperature 0.8)
    want = reference_logp(z, targets, [0.8])[:, 0]
    torch.testing.assert_close(logp.double(), want, atol=tol, rtol=tol)


@pytest.mark.parametrize(
    ("dtype", "softcap", "scale"),
    [(torch.float32, None, 1.0), (torch.float32, 5.0, 0.9), (torch.bfloat16, None, 1.3)],
)
def test_tile_fold_scores_trl_kernel_tiles_exactly(dtype, softcap, scale):
    """Two blocks of rows (TRL's 4096-row blocks), three vocabulary tiles, unscored rows skipped."""
    check_fold_of_kernel_tiles(4100, [0.5, 1.0, 1.7], dtype, softcap, scale)


def test_tile_fold_refuses_a_kernel_that_showed_too_few_rows():
    gen = torch.Generator().manual_seed(1)
    hidden, weight = torch.randn(5, 3, generator=gen), torch.randn(7, 3, generator=gen)
    targets = torch.tensor([0, 1, 2, 3, 4])
    fold = TileFold([1.0], torch.ones(6, dtype=torch.bool), vocab_size=7, device=CPU)  # 6 rows
    with fold.installed():
        ChunkedLogProbFunction.apply(hidden, weight, None, targets, 1.0, 4, None, 1.0, ())
    with pytest.raises(RuntimeError, match="5 of 6 rows"):
        fold.scores()


def test_tile_fold_is_uninstalled_after_an_error():
    original = (chunked_logprob._forward_tile, chunked_logprob._forward_kernel)
    fold = TileFold([1.0], torch.ones(1, dtype=torch.bool), vocab_size=7, device=CPU)
    with pytest.raises(ZeroDivisionError), fold.installed():
        assert chunked_logprob._forward_tile is not original[0]
        _ = 1 / 0
    assert (chunked_logprob._forward_tile, chunked_logprob._forward_kernel) == original


def test_kernel_probe_names_the_supported_trl_when_internals_change(monkeypatch):
    check_kernel(torch.device("cpu"))  # the installed TRL passes
    monkeypatch.delattr(chunked_logprob, "_forward_kernel")  # as if TRL renamed it
    with pytest.raises(RuntimeError, match=r"supports trl>=1\.0"):
        check_kernel(torch.device("cpu"))


# --- the Triton fold, run on CPU by Triton's interpreter ---------------------------------------
# Triton must be imported under TRITON_INTERPRET=1 for its interpreter to work, and importing
# TRL's GRPOConfig (conftest.py) imports Triton: these cases run in a fresh process started
# with the variable set (as in tests/integrations/torch/test_torch_triton.py).


def _in_interpreter() -> bool:
    if importlib.util.find_spec("triton") is None:
        return False
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.max, InterpretedFunction)


IN_INTERPRETER = _in_interpreter()


@pytest.mark.skipif(
    importlib.util.find_spec("triton") is None,
    reason="Triton is not installed (pip install triton)",
)
@pytest.mark.skipif(IN_INTERPRETER, reason="this process runs TestTritonTileFold itself")
@pytest.mark.slow  # a fresh process: imports, then the interpreter (about 10 s of CPU)
def test_triton_tile_fold_cases_in_a_fresh_interpreter_process() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--noconftest"]
    cmd.append(f"{__file__}::TestTritonTileFold")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-2000:]


class TestTritonTileFold:
    """TRL's torch path makes the tiles; our Triton kernel folds them (interpreter only)."""

    __test__ = IN_INTERPRETER

    @pytest.fixture(autouse=True)
    def small_blocks(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from metactl.integrations.torch import _triton_fold

        monkeypatch.setenv("TRITON_INTERPRET", "1")
        monkeypatch.setattr(_triton_fold, "BLOCK_V", 2)  # two blocks per 4-column tile
        monkeypatch.setattr(chunked_logprob, "TOKEN_CHUNK_SIZE", 8)  # three blocks of rows

    @pytest.mark.parametrize(
        ("dtype", "softcap", "scale"),
        [(torch.float32, None, 1.0), (torch.float32, 5.0, 0.9), (torch.bfloat16, None, 1.3)],
    )
    def test_scores_trl_kernel_tiles_exactly(
        self, dtype: torch.dtype, softcap: float | None, scale: float
    ) -> None:
        # three blocks of 8 rows, the middle one with nothing to score
        check_fold_of_kernel_tiles(
            20,
            [0.05, 1.0, 1.7],
            dtype,
            softcap,
            scale,
            unscored=slice(8, 16),
            implementation="triton",
        )

    def test_kernel_probe_runs_the_triton_fold(self) -> None:
        check_kernel(torch.device("cpu"), implementation="triton")

    def test_seam_scores_equal_the_torch_fold(self) -> None:
        """The seam on a tiny model's fused forward: Triton and torch folds give the same scores."""
        config = Qwen2Config(
            vocab_size=37,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=32,
        )
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(config)
        add_fused_lm_head(model, outputs=("log_probs", "entropy"))
        input_ids = torch.randint(0, 37, (2, 7))
        labels = input_ids.clone()
        labels[1, :3] = -100
        scores = {}
        for implementation in ("torch", "triton"):
            holder = types.SimpleNamespace(model=model)  # the seam hooks `trainer.model`
            seam = FusedTileSeam(holder, model, RoundTemperature(1.0), implementation)
            with seam.armed([0.5, 1.0, 2.0], 6), torch.no_grad():
                model(input_ids=input_ids, labels=labels, fused_lm_head=True)
            scores[implementation] = seam.take(2)
            seam.close()  # the next seam hooks the model again
        assert scores["torch"].shape == (2, 6, 3)
        assert bool((scores["torch"][1, :2] == 0).all())  # unlabelled positions score 0
        torch.testing.assert_close(scores["triton"], scores["torch"], atol=1e-5, rtol=1e-5)


def test_fold_refuses_a_bad_implementation() -> None:
    with pytest.raises(ValueError, match="implementation must be one of"):
        TileFold([1.0], torch.ones(1, dtype=torch.bool), 7, device=CPU, implementation="cuda")  # type: ignore[arg-type]
