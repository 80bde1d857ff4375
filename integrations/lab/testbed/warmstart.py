"""Supervised warm start to partial accuracy, cached on disk, and greedy evaluation."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..rundir import MAX_JSON_BYTES, NotRegularFile, read_regular
from .exact import SIGNIFICANT_BITS, float64_exact, snap_
from .model import make_model
from .shipped import load_shipped, shipped_entry
from .tasks import EXACT_ANSWER_TASKS, Task, make_task
from .tokenizer import make_tokenizer

#: Bump when the warm-start procedure changes, so that old caches are not reused.
#: 3: numpy initialisation, float64 steps with snapped weights (:mod:`.exact`), ``steps``.
WARMSTART_VERSION = 3


class WarmStartCacheError(ValueError):
    """A cached warm start cannot be loaded (a truncated or edited file); the message is one
    line naming the file and saying to delete the cache folder, which the next run rebuilds."""


def cache_dir() -> Path:
    """Root of metactl's on-disk cache.

    ``$METACTL_CACHE`` if set, else ``$XDG_CACHE_HOME/metactl``, else ``~/.cache/metactl``.
    """
    if os.environ.get("METACTL_CACHE"):
        return Path(os.environ["METACTL_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "metactl"


def greedy_answers(
    model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, batch_size: int = 256
) -> list[str]:
    """Greedy completions of ``prompts`` (special tokens stripped)."""
    import torch

    was_training = model.training
    model.eval()
    out: list[str] = []
    try:
        with torch.no_grad():
            for i in range(0, len(prompts), batch_size):
                enc = tokenizer(
                    prompts[i : i + batch_size],
                    return_tensors="pt",
                    padding=True,
                    add_special_tokens=False,
                ).to(model.device)
                gen = model.generate(
                    **enc,
                    do_sample=False,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
                new = gen[:, enc["input_ids"].shape[1] :]
                out.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        model.train(was_training)
    return out


def evaluate(model: Any, tokenizer: Any, task: Task, split: str = "eval") -> float:
    """Greedy accuracy (mean reward) of ``model`` on ``task``'s ``split`` ("eval" or "train")."""
    ds = task.eval if split == "eval" else task.train
    answers = greedy_answers(model, tokenizer, list(ds["prompt"]), task.max_completion_length)
    return float(np.mean(task.score(answers, split=split)))


@dataclass(frozen=True)
class WarmStartConfig:
    """Settings of a supervised warm start; the cache key is their hash.

    Attributes:
        task: task name.
        difficulty: task difficulty.
        size: model size preset.
        seed: model initialisation, data and batch-order seed.
        steps: train exactly this many steps, with no accuracy check: the warm start a
            documented result names, since no float difference can move where it stops.
            ``None``: stop by ``target_accuracy`` instead.
        target_accuracy: without ``steps``, stop at the first check where greedy accuracy
            on a validation slice of the train split reaches it.
        max_steps: without ``steps``, stop here regardless.
        batch_size: sequences per step.
        lr: AdamW learning rate.
        check_every: steps between accuracy checks.
        misconception: fraction of supervised examples taught a wrong answer, the
            reference with its last digit shifted by one (``"132"`` -> ``"133"``); the
            rest are taught the reference. Above one half the model learns the wrong
            digit as its mode, keeping the right one as a minority: greedy accuracy near
            zero, samples right only as often as the temperature reaches the minority.
            The stopping rule then scores against the shifted answers, so
            ``target_accuracy`` is how well the task was learned as taught. Exact-answer
            tasks only (addition, sorting).
    """

    task: str = "addition"
    difficulty: int = 2
    size: str = "tiny"
    seed: int = 0
    steps: int | None = None
    target_accuracy: float = 0.3
    max_steps: int = 4000
    batch_size: int = 64
    lr: float = 1e-3
    check_every: int = 25
    misconception: float = 0.0

    def __post_init__(self) -> None:
        if self.steps is not None and not (type(self.steps) is int and self.steps >= 1):
            raise ValueError(
                f"WarmStartConfig(steps): expected a positive integer or None, got {self.steps!r}"
            )
        if not 0.0 <= self.misconception < 1.0:
            raise ValueError(
                f"WarmStartConfig(misconception): expected a fraction in [0, 1), "
                f"got {self.misconception}"
            )
        if self.misconception and self.task not in EXACT_ANSWER_TASKS:
            raise ValueError(
                f"WarmStartConfig(misconception): needs an exact-answer task "
                f"{list(EXACT_ANSWER_TASKS)}, got {self.task!r}"
            )

    def key(self) -> str:
        """Short stable hash of the settings (and the procedure version)."""
        text = json.dumps({**asdict(self), "version": WARMSTART_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def path(self) -> Path:
        """Cache folder of this warm start."""
        name = f"{self.task}-d{self.difficulty}-{self.size}-s{self.seed}-{self.key()}"
        return cache_dir() / "warmstart" / name


def shift_last_digit(answer: str) -> str:
    """The misconceived answer: ``answer`` with its last digit shifted by one, mod 10."""
    return answer[:-1] + str((int(answer[-1]) + 1) % 10)


def _shifted(rows: Any) -> Any:
    """``rows`` (a ``datasets.Dataset``) with every ``answer`` as the misconception teaches it."""
    return rows.map(lambda row: {"answer": shift_last_digit(row["answer"])})


def _taught_answers(task: Task, misconception: float, seed: int) -> list[str]:
    """Per train row, the answer the warm start is taught (shifted with prob. ``misconception``)."""
    answers = list(task.train["answer"])
    if not misconception:
        return answers
    wrong = np.random.default_rng(seed).random(len(answers)) < misconception
    return [shift_last_digit(a) if w else a for a, w in zip(answers, wrong, strict=True)]


def train_warm_start(
    cfg: WarmStartConfig, *, verbose: bool = False, device: str = "cpu"
) -> tuple[Any, dict[str, Any]]:
    """Train the warm start of ``cfg`` (no cache, nothing shipped): ``(model, meta)``, float32."""
    import torch

    tok = make_tokenizer()
    model = make_model(tok, seed=cfg.seed, size=cfg.size).to(device)  # type: ignore[arg-type]
    task = make_task(cfg.task, difficulty=cfg.difficulty, seed=cfg.seed)
    taught = _taught_answers(task, cfg.misconception, cfg.seed)
    # Validation prompts come from the train half, so the stopping rule never sees eval prompts.
    val = task.train.select(range(min(200, len(task.train))))
    if cfg.misconception:
        val = _shifted(val)
    val_task = replace(task, eval=val)
    rows = [p + a for p, a in zip(task.train["prompt"], taught, strict=True)]
    plens = [len(p) for p in task.train["prompt"]]
    eos = tok.eos_token_id
    ids = [tok(r, add_special_tokens=False)["input_ids"] + [eos] for r in rows]
    width = max(len(x) for x in ids)
    x = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)
    labels = torch.full((len(ids), width), -100, dtype=torch.long)
    attn = torch.zeros((len(ids), width), dtype=torch.long)
    for i, (seq, pl) in enumerate(zip(ids, plens, strict=True)):
        x[i, : len(seq)] = torch.tensor(seq)
        attn[i, : len(seq)] = 1
        labels[i, pl : len(seq)] = torch.tensor(seq[pl:])  # loss on the answer and <eos> only
    gen = torch.Generator().manual_seed(cfg.seed)
    budget = cfg.steps if cfg.steps is not None else cfg.max_steps
    t0 = time.perf_counter()
    acc: float | None = None
    step = 0
    with float64_exact(model):
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
        model.train()
        while step < budget:
            idx = torch.randint(0, len(ids), (cfg.batch_size,), generator=gen)
            logits = model(input_ids=x[idx].to(device), attention_mask=attn[idx].to(device)).logits
            # The loss by hand: transformers' causal-LM loss casts the logits to float32.
            loss: Any = torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1), labels[idx, 1:].flatten().to(device)
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for param in model.parameters():
                    snap_(param)
            step += 1
            if cfg.steps is None and step % cfg.check_every == 0:
                acc = evaluate(model, tok, val_task)
                if verbose:
                    print(
                        f"warm start step {step}: loss {loss.item():.3f} val acc {acc:.3f}",
                        flush=True,
                    )
                if acc >= cfg.target_accuracy:
                    break
        if acc is None:
            acc = evaluate(model, tok, val_task)
    model.eval()
    held_out = evaluate(model, tok, task)
    meta: dict[str, Any] = {
        "config": asdict(cfg),
        "version": WARMSTART_VERSION,
        "steps": step,
        "val_accuracy": acc,
        "eval_accuracy": held_out,
        "significant_bits": SIGNIFICANT_BITS,
        "seconds": time.perf_counter() - t0,
    }
    if cfg.misconception:
        as_taught = replace(task, eval=_shifted(task.eval))
        meta["eval_accuracy_as_taught"] = evaluate(model, tok, as_taught)
    return model, meta


def warm_start(
    cfg: WarmStartConfig | None = None,
    *,
    use_cache: bool = True,
    verbose: bool = False,
    device: str = "cpu",
) -> tuple[Any, Any, dict[str, Any]]:
    """Return a supervised warm-started model: shipped, cached, or trained once and cached.

    A warm start the package ships (the documented ones, :mod:`.shipped`) is loaded from
    its checksummed file: the same model on every machine. Any other is trained on
    ``prompt + answer + <eos>`` (loss on the answer only) for ``cfg.steps`` steps, or until
    greedy accuracy on a validation slice of the train split reaches
    ``cfg.target_accuracy``, in float64 with its weights snapped after every step
    (:mod:`.exact`), so that a rebuild on another CPU gives the same weights. It is saved
    with ``save_pretrained`` (safetensors tensors and JSON config) under :func:`cache_dir`
    ``/warmstart/<settings>-<hash>``; later calls with the same settings load it.

    Args:
        cfg: warm-start settings (defaults: addition, 2 digits, tiny model, seed 0).
        use_cache: read and write the on-disk cache.
        verbose: print progress.
        device: where to train it when it is not cached (``"cpu"`` or ``"cuda"``); the model
            is returned on the CPU either way.

    Returns:
        ``(model, tokenizer, meta)``; ``meta`` holds the settings, steps, accuracies and
        training seconds.

    Raises:
        WarmStartCacheError: the cached warm start is damaged (names the file; delete its
            folder and the next call rebuilds it).
    """
    cfg = cfg or WarmStartConfig()
    tok = make_tokenizer()
    entry = shipped_entry(cfg)
    if entry is not None:
        model, shipped_meta = load_shipped(cfg, entry)
        return model, tok, shipped_meta
    path = cfg.path()
    if use_cache and (path / "warmstart.json").exists():
        return _load_cached(path), tok, _cached_meta(path)
    model, meta = train_warm_start(cfg, verbose=verbose, device=device)
    model = model.to("cpu")
    if use_cache:
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        model.save_pretrained(tmp)
        (tmp / "warmstart.json").write_text(json.dumps(meta, indent=2))
        try:
            tmp.rename(path)
        except OSError:  # another process won the race; its copy is identical
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    meta["cached"] = False
    return model, tok, meta


def _cache_error(path: Path, where: Path, problem: str) -> WarmStartCacheError:
    return WarmStartCacheError(
        f"warm-start cache {where}: {problem}; delete the folder {path} (the next run rebuilds it)"
    )


def _cached_meta(path: Path) -> dict[str, Any]:
    """The ``warmstart.json`` of the cache folder ``path``.

    Raises:
        WarmStartCacheError: it is not a regular file of at most ``MAX_JSON_BYTES``, not UTF-8,
            not JSON or not an object.
    """
    file = path / "warmstart.json"
    try:
        meta = json.loads(read_regular(file, MAX_JSON_BYTES, follow_links=True))
    except NotRegularFile as exc:
        raise _cache_error(path, file, str(exc)) from None
    except OSError as exc:
        raise _cache_error(path, file, f"cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise _cache_error(path, file, "not UTF-8 text") from None
    except (json.JSONDecodeError, RecursionError):
        raise _cache_error(path, file, "not JSON") from None
    if not isinstance(meta, dict):
        raise _cache_error(path, file, "not a JSON object")
    return meta


def _load_cached(path: Path) -> Any:
    """The model of the cache folder ``path`` (``save_pretrained``'s files).

    Raises:
        WarmStartCacheError: its weights or config are truncated, edited or missing.
    """
    from safetensors import SafetensorError
    from transformers import Qwen2ForCausalLM

    try:
        return Qwen2ForCausalLM.from_pretrained(path)
    except SafetensorError as exc:
        problem = " ".join(str(exc).split())
        raise _cache_error(path, path / "model.safetensors", problem) from None
    except (OSError, ValueError) as exc:  # a missing or unparsable config.json or weights file
        problem = " ".join(str(exc).split())
        cut = problem if len(problem) <= 200 else problem[:200] + "..."
        raise _cache_error(path, path, cut) from None
