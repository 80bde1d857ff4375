"""MetaGRPOTrainer: TRL's GRPOTrainer with the sampling temperature chosen by a metactl controller.

One generation round (TRL generates once every ``steps_per_generation * num_iterations``
micro-steps) is one controller decision::

    round start   d = controller.sample(); T = d.value set on the trainer, generation config,
                  generation kwargs or vLLM, and the seam (policy, old and reference log-probs
                  all at T)
    first pass    each micro-batch's loss forward also yields its rollouts' log-likelihoods at
                  the virtual temperatures d.virtual, through the seam (no extra model forward)
    round end     statistics gathered across processes -> controller.update(feedback), the
                  same on every rank; metrics into TRL's logs under "meta/"
    checkpoint    checkpoint-N/metactl_controller.json, restored by train(resume_from_checkpoint=...)
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

import torch
from accelerate.utils import broadcast, is_peft_model
from transformers.utils import logging
from trl import GRPOTrainer

import metactl as mc
from metactl.integrations.torch._dispatch import (
    IMPLEMENTATIONS,
    Implementation,
    resolve_implementation,
)
from metactl.metric_keys import TEMPERATURE, meta_key

from . import _trl_private as private
from ._round import OUTCOME_SIGNALS, OutcomeSignal, RoundStats, informative_fraction
from ._seam import choose_seam

logger = logging.get_logger(__name__)

CONTROLLER_FILE = "metactl_controller.json"
"""Name of the controller's state file inside each ``checkpoint-N/`` folder."""

CHECKPOINT_FORMAT = "metactl.trl/1"
"""The file holds ``{"format": ..., "seam": ..., "controller": state_dict}``; older files held the
bare ``state_dict``, and still load."""

TRL_FEEDBACK = (mc.Counterfactual, mc.Outcome, mc.EntropyObservation)
"""The feedback a round can give a controller; :func:`metactl.preferred_feedback` picks one."""


def check_temperature_controller(controller: Any) -> mc.Controller:
    """Refuse a controller that cannot drive the sampling temperature of MetaGRPOTrainer.

    :func:`metactl.check_temperature_controller` with the feedback a round can give.

    Raises:
        metactl.IncompatibleController: (a ``TypeError`` and a ``ValueError``) not a metactl
            controller, arms that are not finite positive temperatures, or it learns from none
            of Counterfactual, Outcome or EntropyObservation.
    """
    return mc.check_temperature_controller(controller, TRL_FEEDBACK)


def _broadcast_json(obj: Any, accelerator: Any) -> Any:
    """``obj`` of the main process, on every process (JSON bytes over a uint8 tensor)."""
    data = json.dumps(obj).encode() if accelerator.is_main_process else b""
    size = broadcast(torch.tensor([len(data)], dtype=torch.int64, device=accelerator.device))
    buf = torch.zeros(int(size.item()), dtype=torch.uint8, device=accelerator.device)
    if accelerator.is_main_process:
        buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    buf = broadcast(buf)
    return json.loads(bytes(buf.cpu().tolist()).decode())


class MetaGRPOTrainer(GRPOTrainer):  # type: ignore[misc]  # TRL is Any to mypy (pyproject)
    """``trl.GRPOTrainer`` whose sampling temperature is a metactl controller's decision.

    Switching from GRPOTrainer is one import and one argument::

        import metactl as mc
        from metactl.integrations.trl import MetaGRPOTrainer

        trainer = MetaGRPOTrainer(
            model=model, reward_funcs=reward, args=GRPOConfig(...), train_dataset=dataset,
            controller=mc.TAMPO(seed=0),          # default: mc.TAMPO(seed=args.seed)
        )
        trainer.train()
        trainer.controller.probs                  # the learned meta-policy

    The temperature changes only at generation boundaries: every micro-batch of a round (all
    ``steps_per_generation * num_iterations`` of them) trains with policy, old and reference
    log-probs at the temperature the round was sampled at. ``args.temperature`` is only the
    temperature before the first round (and of evaluation before training starts); evaluation
    otherwise runs at the current round's temperature.

    Args:
        model, reward_funcs, args, ...: exactly those of the installed ``trl.GRPOTrainer``
            (passed through as given).
        controller: any metactl controller over the sampling temperature (arms must be positive
            temperatures). Learns from :class:`metactl.Counterfactual` feedback when it accepts it
            (TAMPO, MetaGradient), else from :class:`metactl.Outcome` (the round's mean reward),
            else from :class:`metactl.EntropyObservation` (the round's mean token entropy).
            With several processes rank 0's controller state is copied to every rank. A
            controller built without ``seed=`` is seeded from ``args.seed`` (so the same
            ``GRPOConfig.seed`` samples the same temperatures); an explicit seed wins.
            ``args.temperature`` other than TRL's default raises a ``UserWarning``: the
            controller, not the config, sets the sampling temperature.
        outcome: the reward of a controller learning from :class:`metactl.Outcome` (e.g.
            SlidingWindowUCB): ``"mean_reward"`` (default), the round's mean reward, or
            ``"informative_fraction"``, the fraction of the round's prompt groups whose
            completions got unequal rewards (a group with equal rewards has zero GRPO advantage
            and teaches nothing). Both are computed over the whole round, gathered across
            processes. The fraction is logged every round as ``meta/informative_fraction``
            whatever the controller.
        fold_implementation: what folds TRL's logits into the virtual-temperature scores:
            ``"auto"`` (default: the Triton kernel on CUDA/XPU, chunked torch code on CPU),
            ``"torch"`` or ``"triton"``; probed on the policy's device at construction. On a GPU
            without Triton ``"auto"`` raises rather than run the 100x slower torch code.

    How the scores and the round's temperature reach TRL's loss (the *seam*: TRL's logits,
    its fused LM head's tiles, or the final hidden states) is chosen at construction by probing
    the installed TRL (see ``docs/trl.md``); ``trainer.seam`` names it, and every checkpoint
    records it. The fallback seam warns once with its cost.

    Raises:
        TypeError, ValueError: a controller that cannot drive a temperature, or a GRPOConfig
            option that cannot follow a changing temperature (``torch_compile``, a
            ``temperature`` in ``generation_kwargs``), named in the message.
        RuntimeError: the installed TRL cannot be followed (outside the supported range); in
            training, a vLLM round generated at another temperature than the controller's.
    """

    def __init__(
        self,
        model: Any,
        reward_funcs: Any = None,
        args: Any = None,
        *trainer_args: Any,
        controller: mc.Controller | None = None,
        outcome: OutcomeSignal = "mean_reward",
        fold_implementation: Implementation = "auto",
        **trainer_kwargs: Any,
    ) -> None:
        if fold_implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"fold_implementation: expected one of {list(IMPLEMENTATIONS)}, "
                f"got {fold_implementation!r}"
            )
        if outcome not in OUTCOME_SIGNALS:
            raise ValueError(f"outcome: expected one of {list(OUTCOME_SIGNALS)}, got {outcome!r}")
        self.outcome: OutcomeSignal = outcome
        if controller is not None:
            check_temperature_controller(controller)
        if args is not None:
            _check_config(args)
        private.check_grpo_trainer()
        if controller is not None:
            _warn_used_controller(controller)
        # the installed release's own parameters, whatever they are
        super().__init__(model, reward_funcs, args, *trainer_args, **trainer_kwargs)
        _check_config(self.args)
        private.check_trainer(self)
        # Liger's (or TRL's) fused linear GRPO loss keeps the temperature it was built with
        # (TRL 1.0-1.13): set with the round's, like everything else TRL reads
        self._temperature_losses = private.temperature_losses(self)
        self.controller: mc.Controller = (
            mc.TAMPO(seed=self.args.seed) if controller is None else controller
        )
        if isinstance(self.controller, mc.BaseController) and not self.controller.seeded:
            self.controller.reseed(self.args.seed)
        _warn_unused_temperature(self.args)
        # Fixed for the controller's lifetime: chosen once, not per micro-batch.
        self._feedback_kind = mc.preferred_feedback(self.controller, TRL_FEEDBACK)
        if self.accelerator.num_processes > 1:
            self.controller.load_state_dict(
                _broadcast_json(self.controller.state_dict(), self.accelerator)
            )

        policy = self.model.get_base_model() if is_peft_model(self.model) else self.model
        # refused here, before any seam is tried (e.g. Triton for a CPU model)
        resolve_implementation(fold_implementation, policy.get_output_embeddings().weight.device)
        hidden_only = (
            f"use_liger_kernel=True: TRL's loss ({', '.join(self._temperature_losses)}) projects "
            "the final hidden states itself"
            if self._temperature_losses
            else None
        )
        self._seam = choose_seam(self, policy, fold_implementation, hidden_only=hidden_only)
        logger.info("MetaGRPOTrainer: virtual scores through the %r seam", self.seam)
        self._round: RoundStats | None = None
        self._round_start_state: dict[str, Any] | None = None

    @property
    def seam(self) -> str:
        """The seam chosen for the installed TRL: ``"logits"``, ``"fused-tiles"`` or
        ``"hidden-states"``."""
        return self._seam.name

    # --- temperature ---------------------------------------------------------------------------
    def set_temperature(self, value: float) -> None:
        """Set the sampling and scoring temperature everywhere TRL reads it."""
        value = float(value)
        self.temperature = value
        self._seam.set_temperature(value)
        for loss in self._temperature_losses.values():
            loss.temperature = value
        if self.use_vllm:
            self.vllm_generation.temperature = value
        else:
            self.generation_config.temperature = value
            self.generation_kwargs["temperature"] = value

    # --- the round -------------------------------------------------------------------------------
    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        if self.model.training:
            self._round_start_state = self.controller.state_dict()
            decision = self.controller.sample()
            self._round = RoundStats(decision)
            self.set_temperature(decision.value)
            private.train_metrics(self)[meta_key(TEMPERATURE)].append(decision.value)
        if not (self.use_vllm and self.model.training):
            batch: dict[str, Any] = super()._generate_and_score_completions(inputs)
            return batch
        with private.vllm_temperatures_seen(self.vllm_generation) as seen:
            batch = super()._generate_and_score_completions(inputs)
        wrong = [t for t in seen if t != self.temperature]
        if wrong:
            raise RuntimeError(
                f"vLLM generated this round at temperature {wrong[0]}, but the controller chose "
                f"{self.temperature}: the vLLM generation object "
                f"({type(self.vllm_generation).__name__}) does not sample at the temperature "
                "set on it, so the round's rollouts, old log-probs and virtual scores disagree"
            )
        return batch

    def _calculate_rewards(
        self, inputs: Any, prompts: Any, completions: Any, completion_ids_list: Any
    ) -> Any:
        rewards_per_func = super()._calculate_rewards(
            inputs, prompts, completions, completion_ids_list
        )
        private.check_gathered_rewards(
            rewards_per_func, len(prompts), self.accelerator.num_processes
        )
        if self.model.training and self._round is not None:
            # rewards_per_func is gathered over processes: the same round mean on every rank
            weights = self.reward_weights.to(rewards_per_func.device).unsqueeze(0)
            rewards = (rewards_per_func * weights).nansum(dim=1)
            scorable = ~torch.isnan(rewards_per_func).all(dim=1)
            self._round.reward = rewards[scorable].mean().item() if bool(scorable.any()) else None
            group_size = self.num_generations  # typed Optional by TRL; always set to train
            if group_size is not None:
                self._round.informative_fraction = informative_fraction(
                    torch.where(scorable, rewards, torch.nan), group_size
                )
        return rewards_per_func

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        """GRPOTrainer's loss; in a round's first pass the seam also scores the virtual temperatures."""
        generate_every = self.args.steps_per_generation * self.num_iterations
        first_pass = private.micro_step(self) % generate_every < self.args.steps_per_generation
        stats = self._round
        if not (self.model.training and first_pass and stats is not None):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        kind = self._feedback_kind
        if kind is mc.Counterfactual and stats.decision.virtual.size > 0:
            length = inputs["completion_ids"].size(1)
            with self._seam.armed(stats.decision.virtual.tolist(), length):
                loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            self._score_virtual(stats, inputs, self._seam.take(inputs["completion_ids"].size(0)))
        else:
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if kind is mc.EntropyObservation:
                stats.add_entropy(private.last_entropy(self))
        return loss

    def _score_virtual(
        self, stats: RoundStats, inputs: dict[str, Any], per_token: torch.Tensor
    ) -> None:
        """Sum this micro-batch's completion-token scores ``[B, L, K]`` per rollout."""
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        mask = mask.to(per_token.device, torch.float32)
        sums = (per_token * mask[..., None]).sum(dim=1)
        stats.add_rollouts(sums, mask.sum(dim=1), inputs["advantages"])

    def training_step(
        self, model: Any, inputs: Any, num_items_in_batch: Any = None
    ) -> torch.Tensor:
        loss: torch.Tensor = super().training_step(model, inputs, num_items_in_batch)
        generate_every = self.args.steps_per_generation * self.num_iterations
        if private.micro_step(self) % generate_every == 0 and self._round is not None:
            self._finish_round(self._round)
        return loss

    def _finish_round(self, stats: RoundStats) -> None:
        """Update the controller from the round's statistics, identically on every process."""
        feedback, extra = stats.feedback(self._feedback_kind, self.accelerator, self.outcome)
        metrics = dict(extra)
        if stats.informative_fraction is not None:
            metrics["meta/informative_fraction"] = stats.informative_fraction
        if feedback is not None:
            metrics.update({meta_key(k): v for k, v in self.controller.update(feedback).items()})
        logged = private.train_metrics(self)
        for key, value in metrics.items():
            logged[key].append(float(value))
        self._round = None
        self._round_start_state = None

    # --- checkpoints -----------------------------------------------------------------------------
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the model as ``GRPOTrainer`` does, plus the controller as ``metactl_controller.json``.

        Checkpoints save through here first, so the file is in ``checkpoint-N/`` before the
        Trainer pushes the checkpoint to the Hub or rotates old ones.
        """
        super().save_model(output_dir, _internal_call=_internal_call)
        if self.args.should_save:
            # Mid-round, save the state the round started from: a resumed run regenerates the round.
            state = self.controller.state_dict() if self._round is None else self._round_start_state
            folder = self.args.output_dir if output_dir is None else output_dir
            record = {"format": CHECKPOINT_FORMAT, "seam": self.seam, "controller": state}
            with open(os.path.join(folder, CONTROLLER_FILE), "w") as f:
                json.dump(record, f)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, CONTROLLER_FILE)
        if not os.path.exists(path):
            warnings.warn(
                f"{checkpoint} has no {CONTROLLER_FILE} (not saved by MetaGRPOTrainer); "
                "the controller starts from its initial state",
                stacklevel=2,
            )
            return
        with open(path) as f:
            record = json.load(f)
        is_record = isinstance(record, dict) and record.get("format") == CHECKPOINT_FORMAT
        self.controller.load_state_dict(record["controller"] if is_record else record)
        self._round = None


def _warn_used_controller(controller: mc.Controller) -> None:
    """Say that a controller which already decided carries what it learned into this run."""
    if isinstance(controller, mc.BaseController) and controller.step > 0:
        warnings.warn(
            f"controller {type(controller).__name__} has already made {controller.step} "
            "decisions: this run starts from what it learned in an earlier one. To start fresh, "
            "build a new controller for each run; to continue a run on purpose, resume it with "
            "train(resume_from_checkpoint=...) or load its state_dict() into a new controller.",
            UserWarning,
            stacklevel=3,
        )


def _warn_unused_temperature(args: Any) -> None:
    """Say once that ``GRPOConfig(temperature=...)`` does not set the sampling temperature."""
    default = type(args).__dataclass_fields__["temperature"].default
    if args.temperature != default:
        warnings.warn(
            f"GRPOConfig(temperature={args.temperature}) does not set the sampling temperature: "
            "the controller chooses it every round. It is used only before the first round "
            "(e.g. an evaluation before training); to sample at one temperature, pass "
            f"controller=mc.Fixed({args.temperature}).",
            UserWarning,
            stacklevel=3,
        )


def _check_config(args: Any) -> None:
    """Raise for GRPOConfig options that cannot follow a temperature changing every round."""
    if args.torch_compile:
        raise ValueError(
            "MetaGRPOTrainer does not support GRPOConfig(torch_compile=True): the compiled LM head "
            "would be specialised to one temperature. Set torch_compile=False."
        )
    if args.generation_kwargs is not None and "temperature" in args.generation_kwargs:
        raise ValueError(
            "GRPOConfig(generation_kwargs) sets 'temperature', which would override the controller's "
            "temperature; remove it (the controller chooses the temperature of every round)."
        )
