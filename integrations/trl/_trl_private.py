"""Every private TRL and transformers name MetaGRPOTrainer and its seams rely on, in one place.

TRL makes no promise about these names; each is checked when a trainer is built
(:func:`check_grpo_trainer` before ``GRPOTrainer.__init__``, :func:`check_trainer` after it), so
a release that moved one is refused with one error naming it and the supported range, rather
than failing mid-run or, worse, silently doing something else. The rest of the integration
reaches them only through the functions below::

    check_grpo_trainer()                  # the private methods overridden or called exist
    check_trainer(trainer)                # the private attributes read exist, of the right kind
    micro_step(trainer)                   # GRPOTrainer._step
    train_metrics(trainer)                # GRPOTrainer._metrics["train"]
    check_gathered_rewards(rewards, ...)  # _calculate_rewards gathered over processes

The seams' own private names (TRL's chunked log-prob kernel module, read only by the
``"fused-tiles"`` seam) are here too: :func:`kernel_module`, :func:`kernel_projects_labelled_rows_only`.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, MutableMapping
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor

SUPPORTED = "MetaGRPOTrainer supports trl>=1.0 (tested 1.0 to 1.16)"
"""The supported range, named by every error that says a TRL cannot be followed."""

GRPO_TRAINER_METHODS: dict[str, tuple[str, ...]] = {
    "_generate_and_score_completions": ("inputs",),
    "_calculate_rewards": ("inputs", "prompts", "completions", "completion_ids_list"),
    "_get_per_token_logps_and_entropies": ("model",),
}
"""The private GRPOTrainer methods MetaGRPOTrainer overrides or calls, with their leading
parameters (an override of a method TRL no longer calls would silently do nothing)."""

TRAINER_METHODS: dict[str, tuple[str, ...]] = {"_load_optimizer_and_scheduler": ("checkpoint",)}
"""The private transformers ``Trainer`` methods MetaGRPOTrainer overrides (resume)."""

TRAINER_ATTRIBUTES = {
    "_step": int,  # micro-steps since training started: where a generation round begins
    "_metrics": dict,  # {"train": {key: [values]}, "eval": ...}: TRL's logs, which report_to sees
    "temperature": float,  # what TRL's loss divides the logits by (1.0-1.14), read at call time
    "num_iterations": int,
    "use_vllm": bool,
}
"""Private (or undocumented) GRPOTrainer attributes read or written every round, with their type."""


class UnsupportedTRL(RuntimeError):
    """The installed TRL moved a private name MetaGRPOTrainer relies on."""


def _refuse(what: str) -> UnsupportedTRL:
    return UnsupportedTRL(f"the installed TRL's {what}; {SUPPORTED}")


def _check_methods(cls: type, methods: dict[str, tuple[str, ...]]) -> None:
    for name, leading in methods.items():
        method = next((vars(c)[name] for c in cls.__mro__ if name in vars(c)), None)
        params = [] if method is None else list(inspect.signature(method).parameters)[1:]
        if tuple(params[: len(leading)]) != leading:
            found = "missing" if method is None else f"parameters {params}"
            raise _refuse(
                f"{cls.__name__}.{name} is {found}, expected leading parameters {list(leading)}"
            )


def check_grpo_trainer() -> None:
    """Check the private methods MetaGRPOTrainer overrides or calls, before anything is built.

    Raises:
        UnsupportedTRL: (a ``RuntimeError``) a method is missing or takes other leading
            parameters; the message names it and the supported range.
    """
    from trl import GRPOTrainer

    _check_methods(GRPOTrainer, GRPO_TRAINER_METHODS)
    _check_methods(GRPOTrainer, TRAINER_METHODS)


def check_trainer(trainer: Any) -> None:
    """Check the private attributes read every round, right after ``GRPOTrainer.__init__``.

    Raises:
        UnsupportedTRL: an attribute is missing or of another kind (named, with the range).
    """
    for name, kind in TRAINER_ATTRIBUTES.items():
        value = vars(trainer).get(name)
        ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
        if not ok or isinstance(value, bool) is not (kind is bool):
            raise _refuse(
                f"GRPOTrainer has no {name!r} attribute of type {kind.__name__} "
                f"(found {type(value).__name__})"
            )
    if not isinstance(trainer._metrics.get("train"), MutableMapping):
        raise _refuse("GRPOTrainer._metrics has no 'train' mapping of logged values")
    if trainer.use_vllm and "vllm_generation" not in vars(trainer):
        raise _refuse("GRPOTrainer has no 'vllm_generation' (the vLLM generation object)")


def micro_step(trainer: Any) -> int:
    """``GRPOTrainer._step``: micro-steps (loss forwards) taken since training started."""
    step: int = trainer._step
    return step


def train_metrics(trainer: Any) -> MutableMapping[str, list[float]]:
    """``GRPOTrainer._metrics["train"]``: the values TRL averages into each training log."""
    metrics: MutableMapping[str, list[float]] = trainer._metrics["train"]
    return metrics


def last_entropy(trainer: Any) -> float:
    """The mean token entropy TRL logged for the last loss forward.

    Raises:
        UnsupportedTRL: TRL logged no entropy for it.
    """
    values = train_metrics(trainer).get("entropy")
    if not values:
        raise _refuse("loss forward logged no 'entropy' in GRPOTrainer._metrics['train']")
    return float(values[-1])


def check_gathered_rewards(rewards_per_func: Tensor, local_rows: int, num_processes: int) -> None:
    """Check that ``_calculate_rewards`` returned every process's rows (TRL gathers them).

    The round's mean reward and informative fraction must be the same on every rank; they are
    computed from this tensor on the assumption that TRL gathered it.

    Raises:
        UnsupportedTRL: it holds another number of rows than ``local_rows * num_processes``.
    """
    if rewards_per_func.size(0) != local_rows * num_processes:
        raise _refuse(
            f"GRPOTrainer._calculate_rewards returned {rewards_per_func.size(0)} rows, expected "
            f"the {local_rows} of each of {num_processes} processes gathered"
        )


# --- TRL's chunked log-prob kernel (the "fused-tiles" seam, TRL 1.15-1.16) -------------------


def kernel_module() -> Any:
    """``trl.kernels.chunked_logprob``, whose tile functions the fused seam wraps per forward.

    Raises:
        ImportError: the installed TRL has no such module.
    """
    from trl.kernels import chunked_logprob

    return chunked_logprob


def kernel_projects_labelled_rows_only(device: torch.device) -> bool:
    """Whether TRL's fused head projects only the labelled rows on ``device`` (its private
    ``_use_triton``; 1.15, which has no such function, always does)."""
    use_triton = vars(kernel_module()).get("_use_triton")
    return True if use_triton is None else bool(use_triton(device))


def kernel_tile_functions() -> dict[str, Any]:
    """TRL's per-tile fold functions by name: ``_forward_kernel`` (Triton; every release with a
    fused head) and ``_forward_tile`` (torch; 1.16).

    Raises:
        AttributeError: ``_forward_kernel`` is missing (the kernel's internals moved).
    """
    module = vars(kernel_module())
    if "_forward_kernel" not in module:
        raise AttributeError("trl.kernels.chunked_logprob has no _forward_kernel")
    return {n: module[n] for n in ("_forward_kernel", "_forward_tile") if n in module}


@contextmanager
def tile_functions_replaced(replacements: dict[str, Any]) -> Iterator[None]:
    """Replace TRL's tile functions for the duration of the block (one forward), then restore."""
    module = kernel_module()
    saved = {name: vars(module)[name] for name in replacements}
    for name, value in replacements.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


# --- Liger -----------------------------------------------------------------------------------


def temperature_losses(trainer: Any) -> dict[str, Any]:
    """The loss modules the trainer holds that keep a temperature of their own.

    Found by feature, not by name: any ``torch.nn.Module`` attribute of the trainer other than
    its models that has a numeric ``temperature`` (TRL 1.0-1.7 ``liger_grpo_loss``, 1.8-1.13
    ``liger_loss``: Liger's or TRL's fused linear GRPO loss, built with the trainer's
    temperature).
    """
    models = {id(trainer.model), id(trainer.ref_model)}
    return {
        name: value
        for name, value in vars(trainer).items()
        if isinstance(value, torch.nn.Module)
        and id(value) not in models
        and isinstance(vars(value).get("temperature"), (int, float))
    }


# --- vLLM ------------------------------------------------------------------------------------


@contextmanager
def _wrapped(obj: Any, name: str, record: Any) -> Iterator[None]:
    """``obj.name(...)`` calls ``record(*args, **kwargs)`` first, for the block (instance attribute)."""
    method = getattr(obj, name)

    def recording(*args: Any, **kwargs: Any) -> Any:
        record(*args, **kwargs)
        return method(*args, **kwargs)

    had_own = name in vars(obj)
    setattr(obj, name, recording)
    try:
        yield
    finally:
        if had_own:
            setattr(obj, name, method)
        else:
            delattr(obj, name)


@contextmanager
def vllm_temperatures_seen(vllm_generation: Any) -> Iterator[list[float]]:
    """The temperatures TRL's vLLM generation object used in the block, as far as can be seen.

    Recorded: ``vllm_generation.temperature`` when its ``generate`` is called (every release
    reads it there), and the temperature it hands to vLLM: ``SamplingParams.temperature`` of
    ``llm.generate`` (colocate mode) or the ``temperature`` of ``vllm_client.generate`` (server
    mode, main process). The backends are TRL's attributes ``llm`` and ``vllm_client``, the
    latter two wrapped on the instance for the block only.
    """
    seen: list[float] = []

    def attribute(*args: Any, **kwargs: Any) -> None:
        seen.append(float(vllm_generation.temperature))

    def colocate(prompts: Any, sampling_params: Any = None, *args: Any, **kwargs: Any) -> None:
        seen.append(float(sampling_params.temperature))

    def server(*args: Any, temperature: float = 1.0, **kwargs: Any) -> None:
        seen.append(float(temperature))

    with ExitStack() as stack:
        stack.enter_context(_wrapped(vllm_generation, "generate", attribute))
        own = vars(vllm_generation)
        if own.get("llm") is not None:
            stack.enter_context(_wrapped(own["llm"], "generate", colocate))
        if own.get("vllm_client") is not None:
            stack.enter_context(_wrapped(own["vllm_client"], "generate", server))
        yield seen
