"""The documented warm starts, shipped with the package as checksummed safetensors files.

Every warm start a documented result starts from is here, so that it is the same model on
every machine by construction (loading is exact), not only with the very high odds that
the float64 recipe of :mod:`.exact` gives a rebuild. ``manifest.json`` holds, per file,
the :class:`~.warmstart.WarmStartConfig` that made it (its recipe), the file's SHA-256 (the
integrity of the shipped bytes), the SHA-256 of its weights (:func:`weights_sha256`: what a
rebuild must reproduce; a file's own bytes also hold safetensors' metadata, whose key order
varies from process to process) and the accuracies measured when it was made.
``python examples/make_warm_starts.py`` rebuilds them, ``--check`` compares a rebuild's
weights with the shipped ones.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .warmstart import WarmStartConfig

#: Folder of the shipped files, inside the installed package.
SHIPPED_DIR = Path(__file__).with_name("warmstarts")
MANIFEST = SHIPPED_DIR / "manifest.json"


class ShippedWarmStartError(RuntimeError):
    """A shipped warm-start file does not match its checksum (a damaged install)."""


def manifest() -> dict[str, dict[str, Any]]:
    """The shipped warm starts: file name -> ``{"config", "sha256", "meta"}``."""
    if not MANIFEST.exists():
        return {}
    entries: dict[str, dict[str, Any]] = json.loads(MANIFEST.read_text(encoding="utf-8"))
    return entries


def file_name(cfg: WarmStartConfig) -> str:
    """The shipped file of ``cfg``: its cache folder's name, ``.safetensors``."""
    return cfg.path().name + ".safetensors"


def shipped_entry(cfg: WarmStartConfig) -> dict[str, Any] | None:
    """The manifest entry of ``cfg`` if the package ships that warm start, else ``None``."""
    entry = manifest().get(file_name(cfg))
    if entry is None or entry["config"] != asdict(cfg):
        return None
    return entry


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weights_sha256(model: Any) -> str:
    """Hex SHA-256 of a model's weights: each state-dict entry's name then its bytes, by name."""
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_shipped(cfg: WarmStartConfig, entry: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The shipped model of ``cfg`` (float32, eval mode) and its recorded meta.

    Raises:
        ShippedWarmStartError: the file is missing or its SHA-256 differs from the
            manifest's (reinstall metactl).
    """
    from safetensors.torch import load_model

    from .model import make_model
    from .tokenizer import make_tokenizer

    path = SHIPPED_DIR / file_name(cfg)
    if not path.exists():
        raise ShippedWarmStartError(
            f"shipped warm start {path} is missing; reinstall metactl (pip install "
            f"--force-reinstall metactl)"
        )
    digest = sha256(path)
    if digest != entry["sha256"]:
        raise ShippedWarmStartError(
            f"shipped warm start {path} has SHA-256 {digest[:16]}..., the manifest says "
            f"{entry['sha256'][:16]}...; the file is damaged: reinstall metactl"
        )
    model = make_model(make_tokenizer(), seed=cfg.seed, size=cfg.size)  # type: ignore[arg-type]
    load_model(model, path)
    model.eval()
    return model, {**entry["meta"], "shipped": path.name}


def write_model(cfg: WarmStartConfig, model: Any, path: Path) -> Path:
    """Write ``model``'s weights to ``path`` as safetensors, ``cfg`` (its recipe) as metadata."""
    from safetensors.torch import save_model

    save_model(model, str(path), metadata={"recipe": json.dumps(asdict(cfg), sort_keys=True)})
    path.chmod(0o644)  # safetensors writes 0600; an installed package is read by every user
    return path


def save_shipped(cfg: WarmStartConfig, model: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``model`` as the shipped file of ``cfg`` and record it in the manifest.

    Returns:
        The manifest entry written.
    """
    SHIPPED_DIR.mkdir(exist_ok=True)
    path = write_model(cfg, model, SHIPPED_DIR / file_name(cfg))
    recorded = {k: v for k, v in meta.items() if k not in ("seconds", "cached")}
    entry = {
        "config": asdict(cfg),
        "sha256": sha256(path),
        "weights_sha256": weights_sha256(model),
        "meta": recorded,
    }
    entries = manifest()
    entries[path.name] = entry
    MANIFEST.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return entry
