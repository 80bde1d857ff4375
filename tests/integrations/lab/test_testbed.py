"""The tiny-LM GRPO testbed builds offline and deterministically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from metactl.integrations.lab.config import ConfigError, parse_config  # noqa: E402
from metactl.integrations.lab.probe import sample_rollouts  # noqa: E402
from metactl.integrations.lab.testbed import (  # noqa: E402
    TASKS,
    WarmStartConfig,
    cache_dir,
    countdown_reward,
    evaluate,
    exact_match_reward,
    greedy_answers,
    make_model,
    make_task,
    make_tokenizer,
    warm_start,
)
from metactl.integrations.lab.testbed.tasks import DIFFICULTY_RANGES  # noqa: E402


def test_tokenizer_is_char_level_and_round_trips() -> None:
    tok = make_tokenizer()
    ids = tok("12+34=", add_special_tokens=False)["input_ids"]
    assert len(ids) == 6
    assert tok.decode(ids) == "12+34="
    assert (
        tok.decode([*ids, tok.eos_token_id, tok.pad_token_id], skip_special_tokens=True) == "12+34="
    )
    assert make_tokenizer().get_vocab() == tok.get_vocab()
    assert tok.padding_side == "left"


def test_model_is_deterministic_and_leaves_global_rng_alone() -> None:
    tok = make_tokenizer()
    before = torch.random.get_rng_state()
    a = make_model(tok, seed=3)
    assert torch.equal(before, torch.random.get_rng_state())
    b = make_model(tok, seed=3)
    c = make_model(tok, seed=4)
    pa, pb, pc = (list(m.parameters()) for m in (a, b, c))
    assert all(torch.equal(x, y) for x, y in zip(pa, pb, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(pa, pc, strict=True))
    assert a.config.vocab_size == len(tok)
    with pytest.raises(ValueError, match="size"):
        make_model(tok, size="huge")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", TASKS)
def test_tasks_are_deterministic_disjoint_and_fixed_length(name: str) -> None:
    d = DIFFICULTY_RANGES[name][0] + 1
    t1 = make_task(name, difficulty=d, seed=1, n_train=300, n_eval=50)
    t2 = make_task(name, difficulty=d, seed=1, n_train=300, n_eval=50)
    t3 = make_task(name, difficulty=d, seed=2, n_train=300, n_eval=50)
    assert t1.train.to_list() == t2.train.to_list()
    assert t1.eval.to_list() == t2.eval.to_list()
    assert t1.train.to_list() != t3.train.to_list()
    assert not set(t1.train["prompt"]) & set(t1.eval["prompt"])
    prompts = list(t1.train["prompt"]) + list(t1.eval["prompt"])
    assert len({len(p) for p in prompts}) == 1  # no left padding inside TRL
    # The reference answers score 1, wrong answers 0.
    assert t1.score(list(t1.eval["answer"])) == [1.0] * len(t1.eval)
    assert sum(t1.score(["x"] * len(t1.eval))) == 0.0
    tok = make_tokenizer()
    longest = max(len(tok(a, add_special_tokens=False)["input_ids"]) for a in t1.train["answer"])
    assert longest + 1 <= t1.max_completion_length


@pytest.mark.parametrize("name", TASKS)
def test_config_accepts_exactly_the_task_range(name: str) -> None:
    lo, hi = DIFFICULTY_RANGES[name]
    for d in (lo, hi):
        cfg = {"task": name, "difficulty": d, "eval_size": 10, "controllers": [{"kind": "tampo"}]}
        assert parse_config(cfg)
    for d in (lo - 1, hi + 1):
        with pytest.raises(ConfigError, match=f"{name} takes {lo}..{hi}"):
            parse_config({"task": name, "difficulty": d, "controllers": [{"kind": "tampo"}]})


def test_task_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        make_task("chess")
    with pytest.raises(ValueError, match="difficulty"):
        make_task("addition", difficulty=0)


def test_rewards_have_trl_signature() -> None:
    # TRL calls reward_func(prompts=..., completions=..., completion_ids=..., **columns, trainer_state=...)
    out = exact_match_reward(
        prompts=["01+02=", "01+02="],
        completions=["003", " 004"],
        completion_ids=[[1], [2]],
        answer=["003", "003"],
        trainer_state=None,
    )
    assert out == [1.0, 0.0]
    conv = exact_match_reward(
        prompts=["p"], completions=[[{"role": "assistant", "content": "12"}]], answer=["12"]
    )
    assert conv == [1.0]
    got = countdown_reward(
        prompts=["p"] * 5,
        completions=["3*5+7", "7+3*5", "3*5+7+1", "15+7", "3*5+"],
        numbers=["3,5,7"] * 5,
        target=[22] * 5,
    )
    assert got == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_cache_dir_honours_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("METACTL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "metactl"
    monkeypatch.setenv("METACTL_CACHE", str(tmp_path / "mc"))
    assert cache_dir() == tmp_path / "mc"


def test_warm_start_trains_once_then_loads_from_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("METACTL_CACHE", str(tmp_path))
    cfg = WarmStartConfig(max_steps=20, check_every=10, target_accuracy=1.0, seed=5)
    m1, tok, meta1 = warm_start(cfg)
    assert meta1["cached"] is False and meta1["steps"] == 20
    saved = cfg.path()
    assert saved.parent.parent == tmp_path and (saved / "warmstart.json").exists()
    assert not list(saved.glob("*.bin")) and not list(saved.glob("*.pt"))  # safetensors, no pickle
    m2, _, meta2 = warm_start(cfg)
    assert "cached" not in meta2 and meta2["steps"] == 20
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters(), strict=True))
    # Different settings, different cache entry.
    assert WarmStartConfig(seed=6).key() != WarmStartConfig(seed=5).key()
    task = make_task("addition", difficulty=2, seed=5, n_eval=20)
    assert evaluate(m2, tok, task) == pytest.approx(evaluate(m1, tok, task))


def test_sample_rollouts_is_deterministic_by_generator() -> None:
    tok = make_tokenizer()
    model = make_model(tok, seed=0)
    prompts = ["12+34=", "56+07="]

    def draw(seed: int) -> Any:
        return sample_rollouts(
            model,
            tok,
            prompts,
            num_generations=3,
            temperature=1.2,
            max_new_tokens=4,
            generator=torch.Generator().manual_seed(seed),
        )

    state = torch.random.get_rng_state()
    texts, logits, tokens, mask = draw(0)
    assert torch.equal(state, torch.random.get_rng_state())
    assert len(texts) == 6 and logits.shape[:2] == tokens.shape == mask.shape
    assert draw(0)[0] == texts
    assert json.dumps(texts)  # plain strings


def test_size_presets_span_cpu_and_gpu_scales() -> None:
    tok = make_tokenizer()
    tiny = sum(p.numel() for p in make_model(tok, size="tiny").parameters())
    medium = sum(p.numel() for p in make_model(tok, size="medium").parameters())
    assert tiny < 200_000  # the CPU default
    assert 20_000_000 < medium < 60_000_000  # tens of millions: worth a GPU


def test_tokenizer_padded_to_a_vocabulary_size_keeps_the_character_ids() -> None:
    plain, padded = make_tokenizer(), make_tokenizer(vocab_size=500)
    assert len(plain) < 500 == len(padded)
    text = "12+34=046"
    assert padded(text)["input_ids"] == plain(text)["input_ids"]
    assert padded.convert_ids_to_tokens(499) == "<t499>"
    with pytest.raises(ValueError, match="vocab_size"):
        make_tokenizer(vocab_size=3)


def test_misconception_shifts_the_last_digit_of_the_taught_fraction() -> None:
    from metactl.integrations.lab.testbed.warmstart import _taught_answers, shift_last_digit

    assert shift_last_digit("132") == "133"
    assert shift_last_digit("129") == "120"
    task = make_task("addition", difficulty=2, seed=3)
    refs = list(task.train["answer"])
    assert _taught_answers(task, 0.0, seed=3) == refs
    taught = _taught_answers(task, 0.8, seed=3)
    for ref, got in zip(refs, taught, strict=True):
        wrong = ref[:-1] + "0123456789"[(int(ref[-1]) + 1) % 10]
        assert got in (ref, wrong)
    frac = sum(g != r for g, r in zip(taught, refs, strict=True)) / len(refs)
    assert abs(frac - 0.8) < 3 * (0.8 * 0.2 / len(refs)) ** 0.5
    assert _taught_answers(task, 0.8, seed=3) == taught  # seeded, not global randomness


def test_warm_start_cache_key_hashes_every_setting_and_checks_misconception() -> None:
    import hashlib

    from metactl.integrations.lab.testbed.warmstart import WARMSTART_VERSION

    settings = {
        "task": "addition",
        "difficulty": 2,
        "size": "tiny",
        "seed": 0,
        "steps": None,
        "target_accuracy": 0.3,
        "max_steps": 4000,
        "batch_size": 64,
        "lr": 1e-3,
        "check_every": 25,
        "misconception": 0.0,
        "version": WARMSTART_VERSION,
    }
    text = json.dumps(settings, sort_keys=True)
    assert WARMSTART_VERSION == 3
    assert WarmStartConfig().key() == hashlib.sha256(text.encode()).hexdigest()[:12]
    assert WarmStartConfig(steps=650).key() != WarmStartConfig().key()
    assert WarmStartConfig(misconception=0.9).key() != WarmStartConfig().key()
    with pytest.raises(ValueError, match=r"misconception.*\[0, 1\).*got 1.0"):
        WarmStartConfig(misconception=1.0)
    with pytest.raises(ValueError, match="misconception.*exact-answer.*'countdown'"):
        WarmStartConfig(task="countdown", difficulty=3, misconception=0.5)
    with pytest.raises(ConfigError, match=r"misconception.*\[0, 1\).*got 1.5"):
        parse_config({"warm_start": {"misconception": 1.5}, "controllers": [{"kind": "tampo"}]})
    with pytest.raises(ConfigError, match="misconception.*'countdown'"):
        parse_config(
            {
                "task": "countdown",
                "difficulty": 3,
                "warm_start": {"misconception": 0.5},
                "controllers": [{"kind": "tampo"}],
            }
        )


def test_misconceived_warm_start_learns_the_shifted_answer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("METACTL_CACHE", str(tmp_path))
    cfg = WarmStartConfig(
        difficulty=1, misconception=0.9, target_accuracy=0.9, max_steps=600, check_every=50
    )
    model, tok, meta = warm_start(cfg)
    task = make_task("addition", difficulty=1, seed=0)
    prompts = list(task.train["prompt"][:200])
    greedy = greedy_answers(model, tok, prompts, task.max_completion_length)
    refs = list(task.train["answer"][:200])
    as_taught = sum(
        g == r[:-1] + str((int(r[-1]) + 1) % 10) for g, r in zip(greedy, refs, strict=True)
    )
    right = sum(g == r for g, r in zip(greedy, refs, strict=True))
    assert as_taught >= 150 and right <= 20, (as_taught, right)
    # Held out (the 9 unseen 1-digit sums), the model still answers as taught more than right.
    # A margin of 0.3 (3 prompts) held on one machine and not on another (4/9 against 2/9): the
    # warm start's float rounding depends on the CPU's vector unit (issue 16), so only the sign
    # is asserted on so few prompts; the 200 training prompts above carry the size.
    assert meta["eval_accuracy_as_taught"] > meta["eval_accuracy"], meta
