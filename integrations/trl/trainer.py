"""MetaGRPOTrainer: TRL's GRPOTrainer with the sampling temperature chosen by a metactl controller.

One generation round (TRL generates once every ``steps_per_generation * num_iterations``
micro-steps) is one controller decision::

    round start   d = controller.sample(); T = d.value set on the trainer, generation config,
                  generation kwargs or vLLM, and the seam (policy, old and reference log-probs
                  all at T)
    first pass    each micro-batch's loss forward also yields its rollouts' log-likelihoods at
                  the virtual temperatures d.virtual, through the seam (no extra model forward)
    round end     statistics gathered across processes -> controller.update(feedback), the
                  same on every rank; metrics into TRL's logs under "meta/", the policy as a
                  TensorBoard histogram
    checkpoint    checkpoint-N/metactl_controller.json (atomic), validated by
                  train(resume_from_checkpoint=...) before anything loads, then restored
"""

from __future__ import annotations

import json
import math
import os
import warnings
import weakref
from typing import Any

import numpy as np
import torch
from accelerate.utils import broadcast, is_peft_model
from transformers.integrations import TensorBoardCallback
from transformers.utils import logging
from trl import GRPOTrainer

import metactl as mc
from metactl.controllers._arms import arm_label
from metactl.integrations.torch._dispatch import (
    IMPLEMENTATIONS,
    Implementation,
    resolve_implementation,
)
from metactl.metric_keys import (
    INFORMATIVE_FRACTION,
    NONFINITE_REWARDS,
    POLICY,
    SEAM_SECONDS,
    SKIPPED_ROUNDS,
    TEMPERATURE,
    arm_of,
    meta_key,
    prob_key,
)

from . import _trl_private as private
from ._checkpoint import (
    CONTROLLER_FILE,
    TRAINER_STATE_FILE,
    last_complete_checkpoint,
    read_controller_file,
    write_controller_file,
)
from ._round import OUTCOME_SIGNALS, OutcomeSignal, RoundStats, informative_fraction
from ._seam import choose_seam, probe_at_first_round

logger = logging.get_logger(__name__)

ROUND_REWARDS = "metactl_rewards"
ROUND_GROUPS = "metactl_groups"
"""Columns MetaGRPOTrainer adds to TRL's generation batch during training: each row's reward and
prompt group (``global row // num_generations``), so that they follow TRL's shuffle and split;
removed again before TRL's loss."""

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
        per_arm_metrics: also log every per-arm metric of the controller's update
            (``meta/prob/<T>``, ``meta/advantage/<T>``, ``meta/ema_advantage/<T>``, ...: three
            scalars per arm for TAMPO). Off by default: a round logs a handful of scalars
            (``meta/temperature``, ``meta/policy_entropy``, ``meta/expected_value``,
            ``meta/informative_fraction``, ...), and a Discrete meta-policy is drawn as one
            TensorBoard histogram per round, ``meta/policy``, with ``report_to="tensorboard"``.
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
        per_arm_metrics: bool = False,
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
        self.per_arm_metrics = per_arm_metrics
        if controller is not None:
            check_temperature_controller(controller)
        if args is not None:
            _check_config(args)
            _check_launch(args)
        private.check_grpo_trainer()
        if controller is not None:
            _warn_used_controller(controller)
        # the installed release's own parameters, whatever they are
        super().__init__(model, reward_funcs, args, *trainer_args, **trainer_kwargs)
        _check_config(self.args)
        _check_launch(self.args)
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
        self._resume_state: dict[str, Any] | None = None
        space = self.controller.space
        self._arms = space.values if isinstance(space, mc.Discrete) else None
        self._arm_labels = (
            frozenset()
            if self._arms is None
            else frozenset(arm_label(float(v)) for v in self._arms)
        )
        self._skipped_rounds = 0
        self._warned: set[str] = set()
        _claim_controller(self)

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
        if self.model.training and self._seam.probe_pending:
            probe_at_first_round(self, self._seam)
        if self.model.training:
            self._round_start_state = self.controller.state_dict()
            decision = self.controller.sample()
            self._round = RoundStats(decision)
            self.set_temperature(decision.value)
            private.train_metrics(self)[meta_key(TEMPERATURE)].append(decision.value)
        if self.use_vllm and self.model.training:
            with private.vllm_temperatures_seen(self.vllm_generation) as seen:
                batch: dict[str, Any] = super()._generate_and_score_completions(inputs)
            wrong = [t for t in seen if t != self.temperature]
            if wrong:
                raise RuntimeError(
                    f"vLLM generated this round at temperature {wrong[0]}, but the controller "
                    f"chose {self.temperature}: the vLLM generation object "
                    f"({type(self.vllm_generation).__name__}) does not sample at the temperature "
                    "set on it, so the round's rollouts, old log-probs and virtual scores disagree"
                )
        else:
            batch = super()._generate_and_score_completions(inputs)
        if self.model.training and self._round is not None and self._round.rewards is not None:
            # Each row's reward and prompt group travel with it through TRL's shuffle and split.
            n = batch["completion_ids"].size(0)
            first = self.accelerator.process_index * n  # TRL's own slice of the gathered rows
            rows = torch.arange(first, first + n, device=batch["completion_ids"].device)
            batch[ROUND_REWARDS] = self._round.rewards[first : first + n].to(rows.device)
            batch[ROUND_GROUPS] = torch.div(rows, self.num_generations, rounding_mode="floor")
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
            # float64: a sum of large finite float32 rewards must not overflow
            weights = self.reward_weights.to(rewards_per_func.device, torch.float64).unsqueeze(0)
            rewards = (rewards_per_func.double() * weights).nansum(dim=1)
            scorable = ~torch.isnan(rewards_per_func).all(dim=1)
            finite = scorable & torch.isfinite(rewards)
            # an inf reward (or one above float32's 3.4e38) is left out of the round's mean
            self._round.nonfinite_rewards = int((scorable & ~finite).sum())
            self._round.reward = rewards[finite].mean().item() if bool(finite.any()) else None
            self._round.rewards = torch.where(scorable, rewards, torch.nan)
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
        inputs = dict(inputs)  # the round's columns are ours, not TRL's loss's
        rewards, groups = inputs.pop(ROUND_REWARDS, None), inputs.pop(ROUND_GROUPS, None)
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
            per_token = self._seam.take(inputs["completion_ids"].size(0))
            self._score_virtual(
                stats, inputs | {ROUND_REWARDS: rewards, ROUND_GROUPS: groups}, per_token
            )
        else:
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if kind is mc.EntropyObservation:
                stats.add_entropy(private.last_entropy(self))
        return loss

    def _score_virtual(
        self, stats: RoundStats, inputs: dict[str, Any], per_token: torch.Tensor
    ) -> None:
        """Sum this micro-batch's completion-token scores ``[B, L, K]`` per rollout; its lengths
        are the scored completion tokens."""
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        mask = mask.to(per_token.device, torch.float32)
        sums = (per_token * mask[..., None]).sum(dim=1)
        stats.add_rollouts(
            sums, mask.sum(dim=1), inputs["advantages"], inputs[ROUND_REWARDS], inputs[ROUND_GROUPS]
        )

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
        if self._feedback_kind is mc.Counterfactual:
            metrics[meta_key(SEAM_SECONDS)] = self._seam.clock.take_seconds()
        if stats.nonfinite_rewards:
            metrics[meta_key(NONFINITE_REWARDS)] = stats.nonfinite_rewards
            self._warn_once(
                "nonfinite",
                f"{stats.nonfinite_rewards} rewards of a round were inf (or above float32's "
                "3.4e38): the controller learns from the round's finite ones; counted as "
                f"{meta_key(NONFINITE_REWARDS)}",
            )
        if feedback is None:
            self._skipped_rounds += 1
            metrics[meta_key(SKIPPED_ROUNDS)] = self._skipped_rounds
            self._warn_once(
                "skipped",
                "a round gave the controller nothing to learn from (no finite reward, or no "
                f"scored rollout): it is skipped and counted as {meta_key(SKIPPED_ROUNDS)}",
            )
        else:
            update: dict[str, float] = self.controller.update(feedback)
            metrics.update(
                {
                    meta_key(k): v
                    for k, v in update.items()
                    if self.per_arm_metrics or arm_of(k, self._arm_labels) is None
                }
            )
            self._log_policy(update)
        if stats.informative_fraction is not None:
            # the round's own (every rollout's reward), also where a controller reports one
            # from the rows it learned from (mc.Informativeness)
            metrics[meta_key(INFORMATIVE_FRACTION)] = stats.informative_fraction
        logged = private.train_metrics(self)
        for key, value in metrics.items():
            logged[key].append(float(value))
        self._round = None
        self._round_start_state = None

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, UserWarning, stacklevel=3)

    def _log_policy(self, update: dict[str, float]) -> None:
        """The meta-policy as one TensorBoard histogram per round (``report_to="tensorboard"``).

        The policy is the one the update reports (a Discrete policy's ``prob/<label>`` per arm),
        written with transformers' own TensorBoard writer: one bucket per arm holding its
        probability, so TensorBoard's histogram view shows the policy's course over the run.
        """
        if self._arms is None:
            return
        keys = [prob_key(arm_label(float(v))) for v in self._arms]
        if not all(k in update for k in keys):  # a controller without a policy (Fixed, ...)
            return
        probs = np.array([update[k] for k in keys], dtype=np.float64)
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, TensorBoardCallback) and callback.tb_writer is not None:
                callback.tb_writer.add_histogram_raw(
                    meta_key(POLICY),
                    **policy_histogram(self._arms, probs),
                    # the round ends in its last micro-step, before the optimizer step that
                    # the round's scalars are logged at
                    global_step=self.state.global_step + 1,
                )

    # --- checkpoints -----------------------------------------------------------------------------
    def train(
        self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any
    ) -> Any:
        """``Trainer.train``; a resume reads and checks the controller file before anything loads.

        ``resume_from_checkpoint=True`` takes the newest checkpoint whose save completed (one
        interrupted mid-save is skipped, named in a warning). The checkpoint's
        ``metactl_controller.json`` is validated and tried on a copy of the controller first: a
        bad file raises ``ValueError`` naming the file and the field, with the model, optimizer
        and controller untouched. A round left open by an earlier ``train()`` that raised (e.g.
        a reward function failed) is abandoned: the controller returns to the state before that
        round's decision, as if it had not been sampled.

        Raises:
            ValueError: no complete checkpoint, a partial checkpoint named, or a bad controller file.
        """
        self._abandon_open_round()
        checkpoint = None if resume_from_checkpoint is False else resume_from_checkpoint
        if checkpoint is True:
            checkpoint, partial = last_complete_checkpoint(self.args.output_dir)
            if partial:
                warnings.warn(
                    f"skipping {', '.join(partial)}: the save was interrupted (no "
                    f"{TRAINER_STATE_FILE}); resuming from {checkpoint}",
                    UserWarning,
                    stacklevel=2,
                )
            if checkpoint is None:
                raise ValueError(
                    f"No valid checkpoint found in output directory ({self.args.output_dir})"
                )
        self._resume_state = None
        if checkpoint is not None:
            checkpoint = os.fspath(checkpoint)
            if not os.path.isfile(os.path.join(checkpoint, TRAINER_STATE_FILE)):
                raise ValueError(
                    f"resume_from_checkpoint: {checkpoint} has no {TRAINER_STATE_FILE}: its save "
                    "was interrupted or it is not a checkpoint; resume from an earlier one"
                )
            path = os.path.join(checkpoint, CONTROLLER_FILE)
            if os.path.lexists(path):
                self._resume_state = read_controller_file(path, self.controller)
                self._warn_mid_round(checkpoint)
            else:
                warnings.warn(
                    f"{checkpoint} has no {CONTROLLER_FILE} (not saved by MetaGRPOTrainer); "
                    "the controller starts from its initial state",
                    stacklevel=2,
                )
        return super().train(checkpoint, *args, **kwargs)

    def _abandon_open_round(self) -> None:
        """Put the controller back to the start of a round that never finished."""
        if self._round is not None and self._round_start_state is not None:
            self.controller.load_state_dict(self._round_start_state)
        self._round = None
        self._round_start_state = None

    def _warn_mid_round(self, checkpoint: str) -> None:
        """Say what a resume from a checkpoint saved in the middle of a round does."""
        with open(os.path.join(checkpoint, TRAINER_STATE_FILE)) as f:
            global_step = json.load(f).get("global_step")
        if not isinstance(global_step, int):
            return
        micro = global_step * self.args.gradient_accumulation_steps
        generate_every = self.args.steps_per_generation * self.num_iterations
        done = micro % generate_every
        if done:
            warnings.warn(
                f"{checkpoint} was saved {done} of the {generate_every} micro-steps into a "
                "generation round (TRL does not save a round's rollouts). The resumed run "
                "starts a new round there, at the interrupted round's temperature (the "
                "controller is restored to that round's start) on new rollouts; later rounds "
                f"start {done} micro-steps earlier than in an uninterrupted run, so it can make one "
                "more round and samples other temperatures from then on. For an exact resume, "
                "save at round boundaries: save_steps a multiple of "
                f"{generate_every // math.gcd(generate_every, self.args.gradient_accumulation_steps)}.",
                UserWarning,
                stacklevel=3,
            )

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the model as ``GRPOTrainer`` does, plus the controller as ``metactl_controller.json``.

        Checkpoints save through here first, so the file is in ``checkpoint-N/`` before the
        Trainer pushes the checkpoint to the Hub or rotates old ones. It is written atomically.
        """
        super().save_model(output_dir, _internal_call=_internal_call)
        if self.args.should_save:
            # Mid-round, save the state the round started from: a resumed run regenerates the round.
            state = self.controller.state_dict() if self._round is None else self._round_start_state
            assert state is not None  # set with every round
            folder = self.args.output_dir if output_dir is None else output_dir
            write_controller_file(folder, self.seam, state)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None and self._resume_state is not None:
            # read and tried on a copy by train(), before anything was loaded
            self.controller.load_state_dict(self._resume_state)
            self._resume_state = None
            self._round = None
            self._round_start_state = None


def policy_histogram(arms: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """A discrete policy as the arguments of TensorBoard's ``add_histogram_raw``.

    One bucket per arm (sorted), reaching halfway to its neighbours, holding the arm's
    probability; ``num`` is 1, ``sum`` the mean arm ``sum_k p_k v_k`` and ``sum_squares``
    ``sum_k p_k v_k^2``.
    """
    order = np.argsort(arms)
    values, mass = arms[order].astype(np.float64), probs[order]
    gaps = np.diff(values) / 2 if values.size > 1 else np.array([0.5])
    limits = np.append(values[:-1] + gaps, values[-1] + gaps[-1])
    held = values[mass > 0]
    return {
        "min": float(held.min()),
        "max": float(held.max()),
        "num": float(mass.sum()),
        "sum": float(mass @ values),
        "sum_squares": float(mass @ values**2),
        "bucket_limits": limits.tolist(),
        "bucket_counts": mass.tolist(),
    }


_DRIVEN: weakref.WeakValueDictionary[int, MetaGRPOTrainer] = weakref.WeakValueDictionary()
"""id(controller) -> the live trainer it drives."""


def _claim_controller(trainer: MetaGRPOTrainer) -> None:
    """Warn when the controller already drives another live MetaGRPOTrainer."""
    other = _DRIVEN.get(id(trainer.controller))
    if other is not None and other is not trainer and other.controller is trainer.controller:
        warnings.warn(
            f"controller {type(trainer.controller).__name__} already drives another "
            "MetaGRPOTrainer: two trainers on one controller interleave their decisions and "
            "updates (and share its RNG), so neither run is what it would be alone. Build one "
            "controller per trainer.",
            UserWarning,
            stacklevel=3,
        )
    _DRIVEN[id(trainer.controller)] = trainer


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


def _check_launch(args: Any) -> None:
    """Refuse processes that a launcher started together but accelerate runs each alone.

    ``torchrun --nproc_per_node N`` (or ``accelerate launch``) sets ``WORLD_SIZE``; on a machine
    without GPUs, accelerate >= 1.13 runs every process as a single-process run (each rank 0)
    unless ``use_cpu=True``: N independent copies that share no controller and write the same
    checkpoints.

    Raises:
        ValueError: ``WORLD_SIZE`` differs from the process count the trainer sees.
    """
    launched = os.environ.get("WORLD_SIZE", "1")
    if launched.isdigit() and int(launched) > 1 and int(launched) != args.world_size:
        raise ValueError(
            f"the launcher started {launched} processes (WORLD_SIZE={launched}) but the trainer "
            f"sees {args.world_size}: each process would train alone, as rank 0, with its own "
            "controller, and all would write the same checkpoints. On a machine without GPUs, "
            "accelerate (>= 1.13) runs processes together only with GRPOConfig(use_cpu=True): "
            "set it, or launch one process."
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
