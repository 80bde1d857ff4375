"""The warm start is the same on every CPU: float64 recipe, snapped weights, shipped files."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from metactl.integrations.lab.config import ConfigError, demo_config, parse_config  # noqa: E402
from metactl.integrations.lab.testbed import (  # noqa: E402
    WarmStartConfig,
    evaluate,
    make_model,
    make_task,
    make_tokenizer,
    warm_start,
)
from metactl.integrations.lab.testbed.exact import float64_exact, snap_  # noqa: E402
from metactl.integrations.lab.testbed.shipped import (  # noqa: E402
    SHIPPED_DIR,
    ShippedWarmStartError,
    file_name,
    load_shipped,
    manifest,
    shipped_entry,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def weights_hash(model: Any) -> str:
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def test_snap_rounds_to_the_nearest_16_bit_significand() -> None:
    values = np.random.default_rng(0).standard_normal(2000) * np.logspace(-6, 3, 2000)
    t = torch.tensor(values, dtype=torch.float64)
    snap_(t)
    for x, got in zip(values, t.tolist(), strict=True):
        mantissa, exponent = math.frexp(float(x))  # x = m 2^e, 0.5 <= |m| < 1
        assert got == math.ldexp(round(mantissa * 2**16) / 2**16, exponent)
    assert np.array_equal(t.numpy().astype(np.float32).astype(np.float64), t.numpy())


def test_float64_exact_computes_the_models_own_equations_and_restores_it() -> None:
    tok = make_tokenizer()
    model = make_model(tok, seed=1)
    ids = torch.tensor([tok("12+34=046", add_special_tokens=False)["input_ids"]] * 2)
    with torch.no_grad():
        plain = model(input_ids=ids).logits.double()
        with float64_exact(model):
            exact = model(input_ids=ids).logits
            assert exact.dtype == torch.float64
            ref = model.model.norm  # the patched forward is an instance attribute
            assert "forward" in vars(ref)
        restored = model(input_ids=ids).logits
    assert torch.allclose(exact, plain, atol=1e-5)
    assert restored.dtype == torch.float32 and torch.equal(restored.double(), plain)
    assert all("forward" not in vars(m) for m in model.modules())


def test_model_initialisation_is_drawn_from_numpy() -> None:
    tok = make_tokenizer()
    model = make_model(tok, seed=3)
    rng = np.random.default_rng(3)
    std = model.config.initializer_range
    for param in model.parameters():
        if param.ndim == 2:
            expected = (rng.standard_normal(tuple(param.shape)) * std).astype(np.float32)
            if param is model.get_input_embeddings().weight:
                expected[model.config.pad_token_id] = 0.0
            assert np.array_equal(param.detach().numpy(), expected)
        else:  # biases 0, norm weights 1
            assert set(param.detach().unique().tolist()) <= {0.0, 1.0}


_CHILD = r"""
import hashlib, json, sys, torch
from metactl.integrations.lab.testbed import WarmStartConfig, evaluate, make_task, warm_start
from metactl.integrations.lab.testbed.warmstart import train_warm_start
torch.set_num_threads(int(sys.argv[1]))

def digest(model):
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode()); h.update(value.detach().contiguous().numpy().tobytes())
    return h.hexdigest()

short = WarmStartConfig(task="addition", difficulty=1, steps=40, seed=2)
model, meta = train_warm_start(short)
task = make_task("addition", difficulty=1, seed=2)
shipped = json.loads(sys.argv[2])
loaded, tok, _ = warm_start(WarmStartConfig(**shipped))
held_out = make_task(shipped["task"], difficulty=shipped["difficulty"], seed=shipped["seed"], n_eval=300)
ids = torch.tensor([tok(p, add_special_tokens=False)["input_ids"] for p in held_out.eval["prompt"]])
with torch.no_grad():
    control = loaded(input_ids=ids).logits.numpy().tobytes()  # plain float32 arithmetic
print(json.dumps({
    "capability": torch.backends.cpu.get_cpu_capability(),
    "control": hashlib.sha256(control).hexdigest(),
    "short": digest(model), "short_accuracy": evaluate(model, tok, task),
    "shipped": digest(loaded), "shipped_accuracy": evaluate(loaded, tok, held_out),
}))
"""


def _child(capability: str, threads: int, shipped: dict[str, Any], tmp: Path) -> dict[str, Any]:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability, "METACTL_CACHE": str(tmp)}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(threads), json.dumps(shipped)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _cpu_has(flag: str) -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.exists() and flag in cpuinfo.read_text().split()


@pytest.mark.slow
def test_warm_starts_are_identical_under_every_cpu_kernel_and_thread_count(
    tmp_path: Path,
) -> None:
    """A short fresh warm start and a shipped one, under two CPU kernels and 1 or 2 threads.

    ``ATEN_CPU_CAPABILITY`` makes torch take another vector unit's kernels (another CPU's
    float rounding); ``avx512`` needs a CPU that has it and is skipped where it is not.
    """
    shipped = demo_config().warm_start_config()
    from dataclasses import asdict

    runs = [
        _child("default", 1, asdict(shipped), tmp_path),
        _child("avx2", 2, asdict(shipped), tmp_path),
    ]
    if _cpu_has("avx512f"):  # elsewhere torch dies of an illegal instruction under avx512
        runs.append(_child("avx512", 1, asdict(shipped), tmp_path))
    assert [r["capability"] for r in runs] == ["DEFAULT", "AVX2", "AVX512"][: len(runs)]
    first = runs[0]
    # The two children did round differently: one float32 forward already differs.
    assert runs[1]["control"] != first["control"]
    for other in runs[1:]:
        assert other["short"] == first["short"], "a fresh warm start differs between CPU kernels"
        assert other["short_accuracy"] == first["short_accuracy"]
        assert other["shipped"] == first["shipped"]
        assert other["shipped_accuracy"] == first["shipped_accuracy"]
    assert not list(tmp_path.glob("warmstart/*")) or all(
        "d1" in p.name for p in tmp_path.glob("warmstart/*")
    )  # the shipped warm start is loaded, never trained into the cache


def test_every_shipped_warm_start_matches_its_checksum_and_accuracy() -> None:
    entries = manifest()
    documented = {file_name(demo_config().warm_start_config())}
    import runpy

    script = runpy.run_path(str(EXAMPLES / "make_warm_starts.py"))
    for name in script["DOCUMENTED_CONFIGS"]:
        from metactl.integrations.lab.config import load_config

        documented.add(file_name(load_config(EXAMPLES / name).warm_start_config()))
    assert documented <= set(entries), f"not shipped: {sorted(documented - set(entries))}"
    assert {p.name for p in SHIPPED_DIR.glob("*.safetensors")} == set(entries)
    tok = make_tokenizer()
    for name, entry in entries.items():
        path = SHIPPED_DIR / name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], name
        cfg = WarmStartConfig(**entry["config"])
        assert shipped_entry(cfg) == entry and file_name(cfg) == name
        model, meta = load_shipped(cfg, entry)
        assert weights_hash(model) == entry["weights_sha256"], name  # what a rebuild must give
        fresh = make_model(tok, seed=cfg.seed, size=cfg.size)  # type: ignore[arg-type]
        assert set(model.state_dict()) == set(fresh.state_dict())
        assert not any(
            torch.equal(a, b) for a, b in zip(model.parameters(), fresh.parameters(), strict=True)
        )
        task = make_task(cfg.task, difficulty=cfg.difficulty, seed=cfg.seed)
        assert evaluate(model, tok, task) == entry["meta"]["eval_accuracy"], name
        assert meta["steps"] == cfg.steps


def test_a_damaged_shipped_file_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import metactl.integrations.lab.testbed.shipped as shipped

    cfg = demo_config().warm_start_config()
    entry = shipped_entry(cfg)
    assert entry is not None
    damaged = tmp_path / "warmstarts"
    damaged.mkdir()
    data = bytearray((SHIPPED_DIR / file_name(cfg)).read_bytes())
    data[-1] ^= 1
    (damaged / file_name(cfg)).write_bytes(bytes(data))
    monkeypatch.setattr(shipped, "SHIPPED_DIR", damaged)
    with pytest.raises(ShippedWarmStartError, match=f"{file_name(cfg)}.*damaged: reinstall"):
        load_shipped(cfg, entry)
    (damaged / file_name(cfg)).unlink()
    with pytest.raises(ShippedWarmStartError, match="missing; reinstall"):
        load_shipped(cfg, entry)


def test_a_shipped_warm_start_loads_without_training_or_caching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METACTL_CACHE", str(tmp_path))
    cfg = demo_config().warm_start_config()
    _, _, meta = warm_start(cfg)
    assert meta["shipped"] == file_name(cfg) and not list(tmp_path.iterdir())
    # One setting more and it is not the shipped warm start: trained, then cached.
    assert shipped_entry(WarmStartConfig(**{**vars(cfg), "lr": 2e-3})) is None


def test_warm_start_steps_is_a_fixed_length_and_excludes_a_stopping_rule() -> None:
    with pytest.raises(ValueError, match=r"WarmStartConfig\(steps\).*got 0"):
        WarmStartConfig(steps=0)
    with pytest.raises(ValueError, match=r"WarmStartConfig\(steps\).*got True"):
        WarmStartConfig(steps=True)
    base = {"controllers": [{"kind": "tampo"}]}
    with pytest.raises(ConfigError, match="warm_start: steps: .*drop target_accuracy or steps"):
        parse_config({**base, "warm_start": {"steps": 10, "target_accuracy": 0.5}})
    with pytest.raises(ConfigError, match="warm_start: steps: .*drop max_steps or steps"):
        parse_config({**base, "warm_start": {"steps": 10, "max_steps": 50}})
    cfg = parse_config({**base, "warm_start": {"steps": 10}})
    assert cfg.warm_start_config().steps == 10
    assert parse_config(cfg.model_dump(mode="json")) == cfg  # a saved config reads back
