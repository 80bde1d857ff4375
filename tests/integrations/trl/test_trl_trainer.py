"""MetaGRPOTrainer on a tiny local model: temperature plumbing, meta update, checkpoints, errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from conftest import digit_reward, make_config, make_dataset
from trl import GRPOTrainer

import metactl as mc
from metactl.integrations.trl import (
    CONTROLLER_FILE,
    MetaGRPOTrainer,
    check_temperature_controller,
)


class Spy:
    """Records the temperature of every generate call and counts the model's forwards."""

    def __init__(self, trainer: Any) -> None:
        self.temperatures: list[float] = []
        self.fused = self.plain = self.backbone = 0
        model = trainer.model
        generate = model.generate

        def spy_generate(*args: Any, **kwargs: Any) -> Any:
            self.temperatures.append(kwargs["generation_config"].temperature)
            return generate(*args, **kwargs)

        model.generate = spy_generate

        def count_top(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
            if kwargs.get("fused_lm_head"):
                self.fused += 1
            else:
                self.plain += 1

        def count_backbone(module: Any, args: Any, output: Any) -> None:
            self.backbone += 1

        model.register_forward_pre_hook(count_top, with_kwargs=True)
        model.base_model.register_forward_hook(count_backbone)


def decisions_of(controller: Any) -> list[float]:
    """Wrap controller.sample to record every decision's value."""
    values: list[float] = []
    sample = controller.sample

    def recording_sample() -> mc.Decision:
        d = sample()
        values.append(d.value)
        return d

    controller.sample = recording_sample
    return values


def test_temperature_follows_controller_and_no_extra_forward(tokenizer, model, tmp_path):
    from metactl.integrations.lab.testbed import make_model

    # 2 rounds of 2 micro-batches (1 optimizer step each)
    args = make_config(tmp_path, max_steps=4, steps_per_generation=2, gradient_accumulation_steps=1)
    ctl = mc.TAMPO(seed=0)
    trainer = MetaGRPOTrainer(
        model=model,
        reward_funcs=digit_reward,
        args=args,
        train_dataset=make_dataset(),
        processing_class=tokenizer,
        controller=ctl,
    )
    assert trainer.controller is ctl
    decided = decisions_of(ctl)
    spy = Spy(trainer)
    trainer.train()

    assert len(decided) == 2
    assert spy.temperatures == decided
    logged = [h["meta/temperature"] for h in trainer.state.log_history if "meta/temperature" in h]
    assert logged == decided
    assert ctl.updates == 2
    last = next(h for h in reversed(trainer.state.log_history) if "meta/prob/1" in h)
    assert {"meta/advantage/0.6", "meta/prob/1.5", "meta/noop"} <= set(last)
    assert any("meta/grid_peak_temperature/positive" in h for h in trainer.state.log_history)
    # every model forward outside generation is one of TRL's fused log-prob forwards
    assert spy.backbone == spy.fused + spy.plain

    plain = GRPOTrainer(
        model=make_model(tokenizer, seed=0),
        reward_funcs=digit_reward,
        args=make_config(
            tmp_path / "plain", max_steps=4, steps_per_generation=2, gradient_accumulation_steps=1
        ),
        train_dataset=make_dataset(),
        processing_class=tokenizer,
    )
    plain_spy = Spy(plain)
    plain.train()
    assert spy.fused == plain_spy.fused


def test_every_micro_batch_scores_at_its_round_temperature(tokenizer, model_path, tmp_path):
    """steps_per_generation=2, num_iterations=2: policy, old and reference log-probs at the round's T."""
    args = make_config(
        tmp_path,
        max_steps=8,
        steps_per_generation=2,
        num_iterations=2,
        gradient_accumulation_steps=1,
        beta=0.1,
    )
    trainer = MetaGRPOTrainer(
        model=model_path,
        reward_funcs=digit_reward,
        args=args,
        train_dataset=make_dataset(),
        processing_class=tokenizer,
        controller=mc.TAMPO(seed=0),
    )
    spy = Spy(trainer)
    checked: list[tuple[str, float]] = []
    inner = trainer._get_per_token_logps_and_entropies

    def checking(model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        out = inner(model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
        logps = out[0]  # TRL 1.0 returns (logps, entropies); later releases add the aux loss
        temperature = spy.temperatures[-1]  # the round's sampling temperature
        # a plain copy of the weights: a forward of `model` itself would be seen by the seam
        plain = type(model)(model.config).eval()
        plain.load_state_dict(model.state_dict())
        with torch.no_grad(), trainer.accelerator.autocast():
            logits = plain(input_ids=input_ids, attention_mask=attention_mask).logits
            logits = logits[:, -logits_to_keep - 1 : -1].float() / temperature
            tokens = input_ids[:, -logits_to_keep:]
            want = torch.log_softmax(logits, -1).gather(-1, tokens[..., None])[..., 0]
        mask = attention_mask[:, -logits_to_keep:].bool()
        torch.testing.assert_close(logps.detach()[mask], want[mask], atol=1e-4, rtol=1e-4)
        role = (
            "ref" if model is trainer.ref_model else ("loss" if torch.is_grad_enabled() else "old")
        )
        checked.append((role, temperature))
        return out

    trainer._get_per_token_logps_and_entropies = checking
    trainer.train()

    assert len(spy.temperatures) == 2 and spy.temperatures[0] != spy.temperatures[1]
    roles = [role for role, _ in checked]
    assert roles.count("loss") == 8 and roles.count("old") == 2 and roles.count("ref") == 2
    # per round: old, ref, then 4 loss micro-batches, all at the round's temperature
    for r, temperature in enumerate(spy.temperatures):
        assert [t for _, t in checked[6 * r : 6 * (r + 1)]] == [temperature] * 6


def test_virtual_scores_equal_log_softmax_of_the_model_logits(tokenizer, model, tmp_path):
    """Each rollout's sums at the virtual temperatures, against a plain forward's logits."""
    args = make_config(tmp_path, max_steps=2, steps_per_generation=1, gradient_accumulation_steps=1)
    trainer = MetaGRPOTrainer(
        model=model,
        reward_funcs=digit_reward,
        args=args,
        train_dataset=make_dataset(),
        processing_class=tokenizer,
        controller=mc.TAMPO(seed=0),
    )
    checked: list[int] = []
    score_virtual = trainer._score_virtual

    def checking(
        stats: Any,
        inputs: dict[str, Any],
        per_token: torch.Tensor,
        rewards: torch.Tensor,
        groups: torch.Tensor,
    ) -> None:
        completion = inputs["completion_ids"]
        ids = torch.cat([inputs["prompt_ids"], completion], 1)
        attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
        with torch.no_grad():  # the parameters of this micro-batch's loss forward
            logits = trainer.model(input_ids=ids, attention_mask=attention).logits.double()
        z = logits[:, -completion.size(1) - 1 : -1]
        mask = inputs["completion_mask"].double()
        temps = stats.decision.virtual.tolist()
        want = torch.stack(
            [
                (torch.log_softmax(z / t, -1).gather(-1, completion[..., None])[..., 0] * mask).sum(
                    1
                )
                for t in temps
            ],
            -1,
        )
        got: list[tuple[torch.Tensor, torch.Tensor]] = []
        add_rollouts = stats.add_rollouts
        stats.add_rollouts = lambda sums, counts, adv, rewards, groups: (
            got.append((sums, counts)),
            add_rollouts(sums, counts, adv, rewards, groups),
        )
        score_virtual(stats, inputs, per_token, rewards, groups)
        del stats.add_rollouts
        ((sums, counts),) = got
        assert sums.shape == (completion.size(0), len(temps)) and len(temps) == 10
        torch.testing.assert_close(sums.double(), want, atol=1e-4, rtol=1e-5)
        assert counts.tolist() == mask.sum(1).tolist()
        checked.append(completion.size(0))

    trainer._score_virtual = checking
    trainer.train()
    assert len(checked) == 2 and trainer.controller.updates == 2


def test_counterfactual_carries_each_rollouts_reward_group_and_length(tokenizer, model, tmp_path):
    """Rewards, prompt groups and scored lengths stay with their rollouts through TRL's shuffle.

    Two rounds of two prompts x 4 completions, shuffled and split into two micro-batches each:
    the Counterfactual's rewards are recomputed here from the decoded completions, its groups
    checked against the prompts, its lengths against the completion masks.
    """
    args = make_config(tmp_path, max_steps=4, steps_per_generation=2, gradient_accumulation_steps=1)
    ctl = mc.Informativeness(seed=0)
    feedbacks: list[mc.Counterfactual] = []
    update = ctl.update

    def recording_update(feedback: Any) -> Any:
        feedbacks.append(feedback)
        return update(feedback)

    ctl.update = recording_update
    trainer = MetaGRPOTrainer(
        model=model,
        reward_funcs=digit_reward,
        args=args,
        train_dataset=make_dataset(),
        processing_class=tokenizer,
        controller=ctl,
    )
    seen: list[tuple[torch.Tensor, list[str], torch.Tensor]] = []
    score_virtual = trainer._score_virtual

    def spy(stats: Any, inputs: dict[str, Any], per_token: Any, rewards: Any, groups: Any) -> None:
        mask = inputs["completion_mask"].bool()
        texts = [
            tokenizer.decode(row[keep], skip_special_tokens=True)
            for row, keep in zip(inputs["completion_ids"], mask, strict=True)
        ]
        seen.append((inputs["prompt_ids"].clone(), texts, mask.sum(1)))
        score_virtual(stats, inputs, per_token, rewards, groups)

    trainer._score_virtual = spy
    trainer.train()
    assert len(feedbacks) == 2 and ctl.updates == 2 and len(seen) == 4
    for fb, batches in zip(feedbacks, (seen[:2], seen[2:]), strict=True):
        prompts = torch.cat([p for p, _, _ in batches])
        texts = [t for _, ts, _ in batches for t in ts]
        lengths = torch.cat([n for _, _, n in batches]).tolist()
        assert fb.rewards is not None and fb.groups is not None and fb.lengths is not None
        assert fb.rewards.tolist() == pytest.approx(digit_reward(None, texts), abs=1e-6)
        assert fb.lengths.tolist() == lengths
        ids = fb.groups.tolist()
        assert sorted(ids.count(g) for g in set(ids)) == [4, 4]  # two prompts x 4 completions
        for i in range(len(ids)):
            for j in range(len(ids)):
                same_prompt = torch.equal(prompts[i], prompts[j])
                assert (ids[i] == ids[j]) == same_prompt, (i, j)


def test_resume_restores_controller(tokenizer, tmp_path):
    from metactl.integrations.lab.testbed import make_model

    def run(out: Any, resume: str | None = None) -> tuple[Any, list[float]]:
        args = make_config(
            out,
            max_steps=4,
            steps_per_generation=2,
            gradient_accumulation_steps=1,
            save_strategy="steps",
            save_steps=2,
        )
        trainer = MetaGRPOTrainer(
            model=make_model(tokenizer, seed=0),
            reward_funcs=digit_reward,
            args=args,
            train_dataset=make_dataset(),
            processing_class=tokenizer,
            controller=mc.TAMPO(seed=0),
        )
        decided = decisions_of(trainer.controller)
        trainer.train(resume_from_checkpoint=resume)
        return trainer.controller, decided

    full, full_decided = run(tmp_path / "full")
    checkpoint = tmp_path / "full" / "checkpoint-2"
    record = json.loads((checkpoint / CONTROLLER_FILE).read_text())
    assert record["format"] == "metactl.trl/1" and record["seam"] in {"logits", "fused-tiles"}
    saved = record["controller"]
    assert saved["updates"] == 1 and saved["step"] == 1

    resumed, resumed_decided = run(tmp_path / "resumed", resume=str(checkpoint))
    assert resumed_decided == full_decided[1:]  # the next temperature is the uninterrupted one
    assert resumed.state_dict() == full.state_dict()
    assert resumed.probs.tolist() == full.probs.tolist()


@pytest.mark.parametrize(
    "controller",
    [
        mc.SlidingWindowUCB(mc.Discrete([0.7, 1.0, 1.3]), seed=0),
        mc.EntropyTarget(mc.Box(0.5, 2.0), vocab_size=51, seed=0),
        mc.MetaGradient(mc.Box(0.3, 3.0, log=True), seed=0),
    ],
    ids=["ucb-outcome", "entropy-target", "metagradient-box"],
)
def test_other_controllers_learn_from_their_feedback(tokenizer, model, tmp_path, controller):
    args = make_config(tmp_path, max_steps=2, steps_per_generation=1, gradient_accumulation_steps=1)
    trainer = MetaGRPOTrainer(
        model=model,
        reward_funcs=digit_reward,
        args=args,
        train_dataset=make_dataset(),
        processing_class=tokenizer,
        controller=controller,
    )
    spy = Spy(trainer)
    trainer.train()
    assert controller.updates == 2
    assert all(controller.space.contains(t) for t in spy.temperatures)
    assert any("meta/updates" in h for h in trainer.state.log_history)


@pytest.mark.parametrize(
    ("controller", "match"),
    [
        (mc.TAMPO(mc.Discrete([0.0, 1.0]), seed=0), r"must be finite and > 0.*\[0\.0\]"),
        (mc.MetaGradient(mc.Box(-1.0, 1.0), seed=0), r"must be finite and > 0"),
    ],
)
def test_refuses_controller_without_positive_temperatures(
    tokenizer, model, tmp_path, controller, match
):
    with pytest.raises(ValueError, match=match):
        MetaGRPOTrainer(
            model=model,
            reward_funcs=digit_reward,
            args=make_config(tmp_path),
            train_dataset=make_dataset(),
            processing_class=tokenizer,
            controller=controller,
        )


def test_the_controller_check_is_the_core_one_with_the_feedback_a_round_gives():
    # A round gives Counterfactual, Outcome or EntropyObservation feedback, never Outcomes.
    class OutcomesOnly(mc.SlidingWindowUCB):
        accepts = (mc.Outcomes,)

    with pytest.raises(mc.IncompatibleController, match="offered here is Counterfactual, Outcome"):
        check_temperature_controller(OutcomesOnly(mc.Discrete([0.5, 1.0]), seed=0))
    ucb = mc.SlidingWindowUCB(mc.Discrete([0.5, 1.0]), seed=0)
    assert check_temperature_controller(ucb) is ucb
    with pytest.raises(mc.IncompatibleController, match=r"arm\(s\) \[0\.0\]"):
        check_temperature_controller(mc.Fixed(0.0))


def test_refuses_options_that_cannot_follow_the_temperature(tokenizer, model, tmp_path):
    with pytest.raises(TypeError, match="expected a metactl controller"):
        MetaGRPOTrainer(
            model=model,
            reward_funcs=digit_reward,
            args=make_config(tmp_path),
            train_dataset=make_dataset(),
            processing_class=tokenizer,
            controller=1.0,
        )
    args = make_config(tmp_path, generation_kwargs={"temperature": 0.7})
    with pytest.raises(ValueError, match="generation_kwargs.*temperature"):
        MetaGRPOTrainer(
            model=model,
            reward_funcs=digit_reward,
            args=args,
            train_dataset=make_dataset(),
            processing_class=tokenizer,
        )
    with pytest.raises(ValueError, match="torch_compile"):
        MetaGRPOTrainer(
            model=model,
            reward_funcs=digit_reward,
            args=make_config(tmp_path, torch_compile=True),
            train_dataset=make_dataset(),
            processing_class=tokenizer,
        )


def test_lora_policy_learns_from_counterfactual_feedback(tokenizer, model_path, tmp_path):
    """With peft_config (LoRA) the policy is wrapped by PEFT; the virtual pass must still see it."""
    peft = pytest.importorskip("peft")
    args = make_config(tmp_path, max_steps=2, steps_per_generation=1, gradient_accumulation_steps=1)
    trainer = MetaGRPOTrainer(
        model=model_path,
        reward_funcs=digit_reward,
        args=args,
        train_dataset=make_dataset(),
        processing_class=tokenizer,
        peft_config=peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]),
        controller=mc.TAMPO(seed=0),
    )
    trainer.train()
    assert trainer.controller.updates == 2
    logged = [h for h in trainer.state.log_history if "meta/num_rollouts" in h]
    assert len(logged) == 2 and all(h["meta/num_rollouts"] > 0 for h in logged)


def _sampled_temperatures(
    tokenizer: Any, model: Any, tmp_path: Any, controller: Any
) -> list[float]:
    args = make_config(tmp_path, max_steps=3, steps_per_generation=1, gradient_accumulation_steps=1)
    trainer = MetaGRPOTrainer(
        model=model,
        reward_funcs=digit_reward,
        args=args,
        train_dataset=make_dataset(),
        processing_class=tokenizer,
        controller=controller,
    )
    values = decisions_of(trainer.controller)
    trainer.train()
    return values


def test_unseeded_controller_is_seeded_from_the_run_seed(tokenizer, model_path, tmp_path):
    from transformers import AutoModelForCausalLM

    def run(controller: Any, name: str) -> list[float]:
        model = AutoModelForCausalLM.from_pretrained(model_path)
        return _sampled_temperatures(tokenizer, model, tmp_path / name, controller)

    grid = mc.Discrete([0.6, 0.8, 1.0, 1.2, 1.4])
    # top_p=1 keeps every arm in the nucleus, so the draws show the generator, not argmax.
    first = run(mc.TAMPO(grid, top_p=1.0), "a")
    second = run(mc.TAMPO(grid, top_p=1.0), "b")
    assert first == second
    # The same draws as a controller seeded explicitly with args.seed (make_config's seed) ...
    seed = make_config(tmp_path).seed
    reference = mc.TAMPO(grid, top_p=1.0, seed=seed)
    assert first[0] == reference.sample().value
    # ... and an explicit seed wins over the run's seed.
    explicit = mc.TAMPO(grid, top_p=1.0, seed=seed + 1)
    assert explicit.seeded
    run(explicit, "c")
    assert explicit.seed_entropy == seed + 1


def test_config_temperature_warns_that_the_controller_decides(tokenizer, model, tmp_path):
    args = make_config(tmp_path, temperature=0.7)
    with pytest.warns(
        UserWarning, match=r"temperature=0\.7.*controller chooses.*mc\.Fixed\(0\.7\)"
    ):
        MetaGRPOTrainer(
            model=model,
            reward_funcs=digit_reward,
            args=args,
            train_dataset=make_dataset(),
            processing_class=tokenizer,
            controller=mc.TAMPO(seed=0),
        )


# --- informative fraction: the Outcome reward "groups that teach something" ----------------------


def test_informative_fraction_counts_groups_with_unequal_rewards():
    from metactl.integrations.trl._round import informative_fraction

    nan = float("nan")
    rewards = [
        *(1.0, 1.0, 1.0, 1.0),  # solved by every completion: zero advantage
        *(0.0, 0.0, 0.0, 0.0),  # failed by every completion: zero advantage
        *(0.0, 1.0, 0.0, 0.0),  # mixed: teaches
        *(0.5, nan, 0.5, 0.7),  # mixed among the scored completions: teaches
        *(0.3, nan, nan, nan),  # one scored completion: nothing to compare
    ]
    assert informative_fraction(rewards, 4) == pytest.approx(2 / 5)
    assert informative_fraction(torch.tensor(rewards), 4) == pytest.approx(2 / 5)
    assert informative_fraction([0.0, 1.0], 1) == 0.0  # a group of one never differs
    with pytest.raises(ValueError, match="group_size=3"):
        informative_fraction(rewards, 3)


def first_char_is_digit(prompts: list[Any], completions: list[str], **kwargs: Any) -> list[float]:
    """A binary reward, so that some groups are all-equal and others mixed."""
    return [float(c[:1].isdigit()) for c in completions]


def test_ucb_learns_from_the_informative_fraction(tokenizer, model, tmp_path):
    controller = mc.SlidingWindowUCB(mc.Discrete([0.7, 1.0, 1.3]), seed=0)
    received: list[float] = []
    update = controller.update

    def recording_update(feedback: Any) -> Any:
        received.append(feedback.reward)
        return update(feedback)

    controller.update = recording_update
    args = make_config(
        tmp_path,
        max_steps=3,
        per_device_train_batch_size=16,
        steps_per_generation=1,
        gradient_accumulation_steps=1,
    )
    trainer = MetaGRPOTrainer(
        model=model,
        reward_funcs=first_char_is_digit,
        args=args,
        train_dataset=make_dataset(),
        processing_class=tokenizer,
        controller=controller,
        outcome="informative_fraction",
    )
    trainer.train()
    logged = [h for h in trainer.state.log_history if "meta/informative_fraction" in h]
    assert len(received) == 3 and len(logged) == 3
    assert received == pytest.approx([h["meta/informative_fraction"] for h in logged])
    assert all(r in (0.0, 0.25, 0.5, 0.75, 1.0) for r in received)  # 4 prompt groups a round
    # TRL's own count of zero-advantage groups agrees (one process).
    assert received == pytest.approx([1.0 - h["frac_reward_zero_std"] for h in logged])


def test_outcome_must_be_a_known_signal(tokenizer, model, tmp_path):
    with pytest.raises(ValueError, match=r"outcome: expected .*'mean_reward'.*got 'accuracy'"):
        MetaGRPOTrainer(
            model=model,
            reward_funcs=digit_reward,
            args=make_config(tmp_path),
            train_dataset=make_dataset(),
            processing_class=tokenizer,
            outcome="accuracy",  # type: ignore[arg-type]
        )


def test_fold_implementation_is_checked_at_construction(tokenizer, model, tmp_path):
    def build(implementation: Any) -> MetaGRPOTrainer:
        return MetaGRPOTrainer(
            model=model,
            reward_funcs=digit_reward,
            args=make_config(tmp_path),
            train_dataset=make_dataset(),
            processing_class=tokenizer,
            controller=mc.TAMPO(seed=0),
            fold_implementation=implementation,
        )

    with pytest.raises(ValueError, match="fold_implementation.*'cuda'"):
        build("cuda")
    # the kernel cannot run on this CPU model outside Triton's interpreter: refused up front
    pytest.importorskip("triton")
    from metactl.integrations.torch._dispatch import interpreting

    if not interpreting():  # TRL 1.15's matrix session runs under the interpreter
        with pytest.raises(ValueError, match="implementation=.triton. runs on CUDA or XPU"):
            build("triton")
    assert build("torch")._seam.implementation == "torch"
