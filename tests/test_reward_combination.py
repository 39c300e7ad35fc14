"""Rewards that combine: the length reward first, then the user's; None for "cannot score";
a rollout nothing scored, or an infinite reward, stops training."""

import json
import math

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer

from helpers import prompt_rows, tiny_trainer
from larft.rewards import LengthReward


def _trainer(model_dir, tmp_path, reward_funcs=None, rows=None, **kwargs):
    """One step of 2 prompts x 2 rollouts of <= 8 tokens, in training mode."""
    trainer = tiny_trainer(model_dir, tmp_path / "out", rows=rows or prompt_rows(2), reward_funcs=reward_funcs,
                           **{"max_steps": 1, "max_completion_length": 8, "seed": 0, **kwargs})
    trainer.model.train()
    return trainer


def _score(trainer, rows=None):
    """One generation round on 2 prompts x 2 rollouts, as TRL runs it in training."""
    return trainer._generate_and_score_completions(list(Dataset.from_list(rows or prompt_rows(2)).repeat(2)))


def parity(prompts, completions, **kwargs):
    """A user reward: 1 for an even number of characters."""
    return [1.0 if len(c[-1]["content"]) % 2 == 0 else 0.0 for c in completions]


def test_user_rewards_are_added_after_the_length_reward_and_weighted_in_that_order(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path, reward_funcs=[parity], reward_weights=[1.0, 0.5])
    assert trainer.reward_func_names == ["length_reward", "parity"]
    assert trainer.reward_funcs[0].allow_missing_target  # other rewards present: a row without a target is theirs
    _score(trainer)
    trace = [json.loads(line) for line in (tmp_path / "out" / "rollouts.jsonl").read_text().splitlines()]
    assert len(trace) == 4
    assert {r["reward/parity"] for r in trace} <= {0.0, 1.0}
    expected = sum(r["reward/length_reward"] + 0.5 * r["reward/parity"] for r in trace) / 4
    assert trainer._metrics["train"]["reward"][-1] == pytest.approx(expected, abs=1e-6)


def test_your_own_length_reward_replaces_the_default_and_length_reward_false_drops_it(tiny_model_dir, tmp_path):
    mine = LengthReward(refusal_floor=0.0)
    trainer = _trainer(tiny_model_dir, tmp_path, reward_funcs=[mine, parity])
    assert trainer.reward_funcs[0] is mine and trainer.reward_func_names == ["length_reward", "parity"]
    trainer = _trainer(tiny_model_dir, tmp_path, reward_funcs=[parity], length_reward=False)
    assert trainer.reward_func_names == ["parity"]
    # a processing class given for your reward functions lines up with them (none for the length reward)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    trainer = _trainer(tiny_model_dir, tmp_path, reward_funcs=[parity], reward_processing_classes=tok)
    assert trainer.reward_processing_classes == [None, tok]


def test_reward_setup_mistakes_are_one_clear_error(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match=r"reward_weights has 1 value\(s\) for 2 reward functions: "
                                         r"length_reward, parity \(the length reward comes first"):
        _trainer(tiny_model_dir, tmp_path, reward_funcs=[parity], reward_weights=[1.0])
    with pytest.raises(ValueError, match="no reward function: with length_reward=False, pass reward_funcs"):
        _trainer(tiny_model_dir, tmp_path, length_reward=False)


def test_none_from_one_function_leaves_the_rollout_to_the_others(tiny_model_dir, tmp_path):
    def first_half_only(prompts, completions, **kwargs):
        return [1.0 if i < len(completions) // 2 else None for i in range(len(completions))]

    trainer = _trainer(tiny_model_dir, tmp_path, reward_funcs=[first_half_only])
    _score(trainer)  # no error: the length reward scored every rollout
    rewards = trainer._last_rewards
    assert torch.isfinite(rewards[:, 0]).all()
    assert rewards[:2, 1].tolist() == [1.0, 1.0] and torch.isnan(rewards[2:, 1]).all()
    assert trainer._metrics["train"]["rewards/first_half_only/mean"][-1] == 1.0  # TRL's nan-aware mean


def test_a_dataset_can_mix_length_prompts_with_prompts_only_your_reward_scores(tiny_model_dir, tmp_path):
    rows = prompt_rows(1) + [{"prompt": [{"role": "user", "content": "Name a colour."}], "target": None,
                        "target_range": None, "constraint": None, "unit": None, "line": 2}]

    def colour(prompts, completions, target, **kwargs):
        return [None if t is not None else 1.0 for t in target]

    trainer = _trainer(tiny_model_dir, tmp_path, reward_funcs=[colour], rows=rows)
    _score(trainer, rows)
    rewards = trainer._last_rewards  # rollouts: length prompt, colour prompt, length prompt, colour prompt
    length, other = [0, 2], [1, 3]
    assert torch.isfinite(rewards[length, 0]).all() and torch.isnan(rewards[other, 0]).all()
    assert torch.isnan(rewards[length, 1]).all() and rewards[other, 1].tolist() == [1.0, 1.0]
    assert math.isfinite(trainer._metrics["train"]["length_error_mean"][-1])  # over the length prompts only
    trace = [json.loads(line) for line in (tmp_path / "out" / "rollouts.jsonl").read_text().splitlines()]
    assert [r["target"] for r in trace] == [rows[0]["target"], None] * 2


def test_a_row_without_a_target_is_an_error_when_only_the_length_reward_scores():
    completions = [[{"role": "assistant", "content": "Blue."}]]
    prompts = [[{"role": "user", "content": "Name a colour."}]]
    with pytest.raises(ValueError, match=r"rollout 0 \(prompt 'Name a colour.'\) has no length target"):
        LengthReward()(prompts, completions, target=[None], constraint=[None])
    assert LengthReward(allow_missing_target=True)(prompts, completions, target=[None]) == [None]
    assert LengthReward()(prompts, completions, target=[1]) == [1.0]


def test_a_rollout_nothing_scored_or_an_infinite_reward_stops_training(tiny_model_dir, tmp_path):
    def nan_first(prompts, completions, **kwargs):
        return [float("nan")] + [1.0] * (len(completions) - 1)

    def inf_second(prompts, completions, **kwargs):
        return [1.0, float("inf")] + [1.0] * (len(completions) - 2)

    trainer = _trainer(tiny_model_dir, tmp_path, reward_funcs=[nan_first], length_reward=False)
    with pytest.raises(FloatingPointError, match=r"no reward for rollout 0 at step 1: every reward function gave "
                                                 r"None or NaN \(nan_first\)"):
        _score(trainer)
    trainer = _trainer(tiny_model_dir, tmp_path, reward_funcs=[inf_second])
    with pytest.raises(FloatingPointError, match="'inf_second' gave inf for rollout 1 at step 1"):
        _score(trainer)
    trainer = _trainer(tiny_model_dir, tmp_path, reward_funcs=[nan_first])  # the length reward scored rollout 0
    _score(trainer)
    assert torch.isnan(trainer._last_rewards[0, 1]) and torch.isfinite(trainer._last_rewards[0, 0])


def test_length_reward_is_a_plain_trl_reward_function(tiny_model_dir, tmp_path):
    """`from larft import length_reward` works where TRL's own reward functions do."""
    from trl import GRPOConfig, GRPOTrainer

    from larft import length_reward, length_score

    rows = prompt_rows(2)
    completions = [[{"role": "assistant", "content": "one two three four"}]] * 2
    got = length_reward(prompts=[r["prompt"] for r in rows], completions=completions,
                        target=[r["target"] for r in rows], constraint=[r["constraint"] for r in rows])
    assert got == [length_score("one two three four", r["target"], constraint=r["constraint"], degenerate_guard=True,
                                refusal_floor=0.1) for r in rows]
    config = GRPOConfig(output_dir=str(tmp_path / "trl"), max_steps=1, num_generations=2, per_device_train_batch_size=4,
                        max_completion_length=8, report_to="none", save_strategy="no", use_cpu=True)
    trainer = GRPOTrainer(model=str(tiny_model_dir), reward_funcs=[length_reward], args=config,
                          train_dataset=Dataset.from_list(rows),
                          processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
    trainer.model.train()
    out = trainer._generate_and_score_completions(list(Dataset.from_list(rows).repeat(2)))
    assert out["advantages"].shape[0] == 4
    # in LARFTTrainer the function stands for its own configured length reward: not scored twice
    larft = _trainer(tiny_model_dir, tmp_path, reward_funcs=[length_reward, parity])
    assert larft.reward_func_names == ["length_reward", "parity"]
    assert isinstance(larft.reward_funcs[0], LengthReward) and larft.reward_funcs[0].tokenizer is not None
