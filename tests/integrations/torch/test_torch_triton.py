"""The Triton implementation of the ops, run on CPU tensors by Triton's interpreter.

CI has no GPU: under ``TRITON_INTERPRET=1`` ``triton.jit`` wraps functions in an interpreter
that runs each program with numpy. Triton reads the variable when it wraps a function, and
its own reductions (``tl.sum``, ``tl.max``) are wrapped when ``triton.language`` is first
imported, so the variable must be set before anything imports Triton (TRL does, as soon as
``GRPOConfig`` is imported). These tests therefore run in a fresh process started with the
variable set (:func:`test_kernel_cases_in_a_fresh_interpreter_process`); in the main process
they are skipped, and a session started with ``TRITON_INTERPRET=1`` runs them directly.
Blocks are cut to 64 columns so that small rows span several blocks; shapes stay small (the
interpreter runs the programs one after the other, a few ms each).

References are written from the equation in float64, ``log_softmax(z64 / T)[o]``, on the
same (upcast) logits. The tolerance is that of the torch implementation's tests
(``test_torch_ops.py``): ``16 u (1 + |ref|)``, u = 2**-24.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton", reason="Triton is not installed (pip install triton)")

import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from metactl.integrations.torch import (
    _dispatch,
    _triton_fold,
    chunk_temperature_loglik,
    hidden_rows_loglik,
    temperature_loglik,
    temperature_loglik_from_hidden,
)

U = 2.0**-24
TEMPS_10 = [0.05, 0.1, 0.3, 0.7, 1.0, 1.3, 1.5, 3.0, 6.0, 10.0]


IN_INTERPRETER = isinstance(tl.max, InterpretedFunction)
"""Whether Triton was imported under ``TRITON_INTERPRET=1`` (so its reductions run on CPU)."""


def reference_logp(z: torch.Tensor, tokens: torch.Tensor, temps: list[float]) -> torch.Tensor:
    """``[..., K]`` float64 ``log softmax(z / T_k)[o]``, written from the definition."""
    z = z.double()
    ids = tokens.clamp(min=0)[..., None]
    return torch.stack([torch.log_softmax(z / t, -1).gather(-1, ids)[..., 0] for t in temps], -1)


def assert_close_to(got: torch.Tensor, ref: torch.Tensor) -> None:
    assert got.dtype == torch.float32 and got.shape == ref.shape
    err = (got.double() - ref).abs()
    bound = 16 * U * (1 + ref.abs())
    assert bool((err <= bound).all()), f"max error / bound = {float((err / bound).max()):.2f}"


def make_batch(
    dtype: torch.dtype,
    scale: float,
    seed: int = 0,
    batch: int = 3,
    length: int = 4,
    vocab: int = 200,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits in [-1e4, 1e4] (both extremes in row 0), a padded row and an empty row."""
    gen = torch.Generator().manual_seed(seed)
    z = (torch.randn(batch, length, vocab, generator=gen) * scale).clamp(-1e4, 1e4)
    z[0, 0, 0], z[0, 0, vocab - 1] = 1e4, -1e4
    z = z.to(dtype)
    tokens = torch.randint(0, vocab, (batch, length), generator=gen)
    tokens[0, 0] = vocab - 1  # the -1e4 logit: the extreme low log-probability
    tokens[0, 1] = z[0, 1].float().argmax()  # a likely one
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[1, length // 2 :] = False
    mask[2] = False
    tokens[~mask] = -100
    return z, tokens, mask


@pytest.mark.skipif(IN_INTERPRETER, reason="this process runs TestKernelInInterpreter itself")
@pytest.mark.slow  # a fresh process: imports, then the interpreter (about 10 s of CPU)
def test_kernel_cases_in_a_fresh_interpreter_process() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--noconftest"]
    cmd.append(f"{__file__}::TestKernelInInterpreter")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-2000:]


class TestKernelInInterpreter:
    """The kernel's numbers through the public ops (collected only inside the interpreter)."""

    __test__ = IN_INTERPRETER

    @pytest.fixture(autouse=True)
    def interpreter(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        monkeypatch.setattr(_triton_fold, "BLOCK_V", 64)

    @pytest.mark.parametrize(
        ("dtype", "scale", "temps"),
        [
            (torch.float32, 3e3, TEMPS_10),
            (torch.bfloat16, 30.0, [0.05, 1.0, 10.0]),
            (torch.float16, 1.0, [0.7]),
            (torch.float32, 30.0, [0.05 + 0.55 * i for i in range(17)]),
        ],
    )
    def test_per_token_matches_float64_reference(
        self, dtype: torch.dtype, scale: float, temps: list[float]
    ) -> None:
        z, tokens, mask = make_batch(dtype, scale)
        got = temperature_loglik(z, tokens, mask, temps, reduction="none", implementation="triton")
        ref = reference_logp(z, tokens, temps)
        assert_close_to(got[mask], ref[mask])
        assert bool((got[~mask] == 0).all())

    def test_mean_and_sum_match_reference_and_empty_rows_give_zero(self) -> None:
        z, tokens, mask = make_batch(torch.bfloat16, 30.0, seed=1)
        temps = [0.3, 1.0, 2.0]
        ref = reference_logp(z, tokens, temps) * mask[..., None]
        total = temperature_loglik(z, tokens, mask, temps, reduction="sum", implementation="triton")
        mean = temperature_loglik(z, tokens, mask, temps, implementation="triton")
        count = mask.sum(1, keepdim=True).clamp(min=1)
        torch.testing.assert_close(total.double(), ref.sum(1), rtol=1e-6, atol=1e-5)
        torch.testing.assert_close(mean.double(), ref.sum(1) / count, rtol=1e-6, atol=1e-5)
        assert bool((mean[2] == 0).all())

    def test_strided_logits_are_read_in_place(self) -> None:
        """A slice along L and a view with the vocabulary not contiguous (column stride L)."""
        gen = torch.Generator().manual_seed(2)
        temps = [0.5, 1.5]
        full = torch.randn(2, 5, 150, generator=gen) * 10
        tokens = torch.randint(0, 150, (2, 4), generator=gen)
        mask = torch.ones(2, 4, dtype=torch.bool)
        sliced = full[:, :-1]
        got = temperature_loglik(
            sliced, tokens, mask, temps, reduction="none", implementation="triton"
        )
        assert_close_to(got, reference_logp(sliced, tokens, temps))
        transposed = (torch.randn(2, 150, 4, generator=gen) * 10).transpose(1, 2)
        assert transposed.stride(-1) != 1
        got = temperature_loglik(
            transposed, tokens, mask, temps, reduction="none", implementation="triton"
        )
        assert_close_to(got, reference_logp(transposed, tokens, temps))

    @pytest.mark.parametrize(
        ("dtype", "with_bias", "softcap", "logit_scale"),
        [(torch.float32, True, None, 1.0), (torch.bfloat16, False, 5.0, 0.9)],
    )
    def test_hidden_rows_tiles_match_float64_reference(
        self, dtype: torch.dtype, with_bias: bool, softcap: float | None, logit_scale: float
    ) -> None:
        """Three blocks of rows, three vocabulary tiles (the last one short), softcap and scale."""
        gen = torch.Generator().manual_seed(3)
        n, hidden_size, vocab = 11, 8, 150
        hidden = (torch.randn(n, hidden_size, generator=gen) * 3).to(dtype)
        weight = (torch.randn(vocab, hidden_size, generator=gen) * 3).to(dtype)
        bias = (torch.randn(vocab, generator=gen) * 3).to(dtype) if with_bias else None
        tokens = torch.randint(0, vocab, (n,), generator=gen)
        temps = [0.05, 0.4, 1.0, 10.0]
        got = hidden_rows_loglik(
            hidden,
            weight,
            bias,
            tokens,
            temps,
            logit_scale=logit_scale,
            softcap=softcap,
            token_chunk=4,
            vocab_chunk=70,
            implementation="triton",
        )
        # the logits as the LM head computes them in its dtype, then transformed in float64
        z = F.linear(hidden, weight, bias).double() * logit_scale
        if softcap is not None:
            z = softcap * torch.tanh(z / softcap)
        assert_close_to(got, reference_logp(z, tokens, temps))

    def test_from_hidden_equals_the_torch_implementation(self) -> None:
        gen = torch.Generator().manual_seed(4)
        hidden = torch.randn(2, 5, 8, generator=gen)
        weight, bias = torch.randn(100, 8, generator=gen), torch.randn(100, generator=gen)
        tokens = torch.randint(0, 100, (2, 5), generator=gen)
        mask = torch.rand(2, 5, generator=gen) < 0.7
        temps = [0.5, 1.0, 2.0]
        got = temperature_loglik_from_hidden(
            hidden, weight, bias, tokens, mask, temps, chunk_size=3, implementation="triton"
        )
        want = temperature_loglik_from_hidden(
            hidden, weight, bias, tokens, mask, temps, chunk_size=3, implementation="torch"
        )
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)

    def test_chunk_function_skips_unscored_rows(self) -> None:
        z, tokens, mask = make_batch(torch.float32, 30.0, seed=5)
        z[~mask] = float("nan")  # never read
        temps = [0.5, 2.0]
        got = chunk_temperature_loglik(z, tokens, temps, mask=mask, implementation="triton")
        assert_close_to(got[mask], reference_logp(z, tokens, temps)[mask])
        assert bool((got[~mask] == 0).all())

    @pytest.mark.parametrize("value", [float("nan"), float("inf")])
    @pytest.mark.filterwarnings(
        "ignore:invalid value encountered:RuntimeWarning"
    )  # numpy's inf - inf
    def test_non_finite_scored_logits_raise(self, value: float) -> None:
        z, tokens, mask = make_batch(torch.float32, 1.0)
        z[1, 1, 100] = value
        kind = "NaN" if math.isnan(value) else r"\+inf"
        with pytest.raises(
            ValueError,
            match=rf"logits hold {kind} at scored position \(1, 1\) \(vocabulary index 100\)",
        ):
            temperature_loglik(z, tokens, mask, [1.0], implementation="triton")

    @pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # z - m = -inf
    @pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf - inf
    def test_a_row_spanning_more_than_fp32_is_scored_exactly(self) -> None:
        """z_o - max z = -6e38 overflows fp32; (z_o - max z) / T does not at T = 100 (issue 24).

        The row spans three 64-column blocks: the low logit in the first, the high in the second.
        """
        z = torch.zeros(1, 2, 150)
        z[0, 0, 3], z[0, 0, 100] = -3e38, 3e38
        z[0, 1, 140], z[0, 1, 10] = -3e38, 3e38
        tokens = torch.tensor([[3, 140]])
        mask = torch.ones(1, 2, dtype=torch.bool)
        temps = [100.0, 20.0]
        got = temperature_loglik(z, tokens, mask, temps, reduction="none", implementation="triton")
        assert_close_to(got, reference_logp(z, tokens, temps))
        with pytest.raises(ValueError, match=r"put the scored token 3 6e\+38 below .*\[1\.0\]"):
            temperature_loglik(z, tokens, mask, [1.0, 100.0], implementation="triton")
        wide = z.double()
        wide[0, 1, 0] = 1e39  # fp64 logits beyond fp32, in which the kernel computes
        with pytest.raises(ValueError, match=r"logits hold 1e\+39 at scored position \(0, 1\)"):
            temperature_loglik(wide, tokens, mask, temps, implementation="triton")
        nan_mask = mask.float()
        nan_mask[0, 1] = float("nan")
        with pytest.raises(ValueError, match=r"mask must hold only 0 and 1 .*got nan at \(0, 1\)"):
            temperature_loglik(z, tokens, nan_mask, temps, implementation="triton")

    def test_a_block_of_neg_inf_only_is_a_zero_probability(self) -> None:
        """-inf logits (a masked vocabulary), a whole 64-column block of them first in a row."""
        z, tokens, mask = make_batch(torch.float32, 3.0, seed=6)
        z[0, 2, :64] = -float("inf")
        z[0, 3, 5] = -float("inf")
        tokens[0, 2:] = 70
        temps = [0.1, 1.0]
        got = temperature_loglik(z, tokens, mask, temps, reduction="none", implementation="triton")
        assert_close_to(got[mask], reference_logp(z, tokens, temps)[mask])


def test_auto_is_torch_on_cpu_and_triton_on_gpu_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    resolve = _dispatch.resolve_implementation
    assert resolve("auto", torch.device("cpu")) == "torch"  # even under the interpreter
    assert resolve("auto", torch.device("cuda")) == "triton"
    assert resolve("auto", torch.device("xpu")) == "triton"
    assert resolve("torch", torch.device("cuda")) == "torch"

    def no_kernel(*args: object, **kwargs: object) -> None:
        raise AssertionError("the Triton kernel ran for a CPU tensor under 'auto'")

    monkeypatch.setattr(_triton_fold.TritonFold, "fold", no_kernel)
    z, tokens, mask = make_batch(torch.float32, 1.0)
    temperature_loglik(z, tokens, mask, [1.0])


def test_missing_triton_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_dispatch, "triton_installed", lambda: False)
    with pytest.raises(ImportError, match=r"pip install triton.*implementation='torch'"):
        _dispatch.resolve_implementation("auto", torch.device("cuda"))
    z, tokens, mask = make_batch(torch.float32, 1.0)
    with pytest.raises(ImportError, match="needs Triton"):
        temperature_loglik(z, tokens, mask, [1.0], implementation="triton")


def test_bad_implementation_raises_value_error_naming_it() -> None:
    z, tokens, mask = make_batch(torch.float32, 1.0)
    with pytest.raises(ValueError, match=r"implementation must be one of .* got 'cuda'"):
        temperature_loglik(z, tokens, mask, [1.0], implementation="cuda")  # type: ignore[arg-type]


def test_triton_on_cpu_outside_the_interpreter_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    z, tokens, mask = make_batch(torch.float32, 1.0)
    with pytest.raises(ValueError, match=r"CUDA or XPU tensors.*TRITON_INTERPRET=1"):
        temperature_loglik(z, tokens, mask, [1.0], implementation="triton")


def test_importing_the_ops_does_not_import_triton() -> None:
    code = (
        "import sys, metactl.integrations.torch as ops, torch\n"
        "ops.temperature_loglik(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long),"
        " torch.ones(1, 2), [1.0])\n"
        "assert 'triton' not in sys.modules, 'triton was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
