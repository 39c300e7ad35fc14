"""Budgets that cannot change a score (larft.budget): eval caps where a cut answer already scores
~0, training rollouts cut at 2x the target with a known reward, kept in the loss."""

import pytest
from datasets import Dataset

from larft.budget import _EN_SAMPLE, token_budget, tokens_per_word, training_budget, zero_score_multiple
from larft.eval.counters import lifebench_count
from larft.eval.metrics import lifebench_ls, longbench_sl
from larft.eval.runner import EvalSettings
from larft.rewards import LengthReward, length_score, truncated_reward
from helpers import prompt_rows, two_step_trainer
from tiny import tiny_tokenizer


def _run_away(tokenizer, budget: int) -> str:
    """An answer that never stops, cut at `budget` tokens: prose repeated, as a looping model writes."""
    ids = tokenizer((_EN_SAMPLE + " ") * 40, add_special_tokens=False)["input_ids"][:budget]
    return tokenizer.decode(ids)


@pytest.mark.parametrize("target", [16, 32, 64, 128, 256])
def test_a_run_away_answer_cut_at_the_eval_cap_scores_about_zero(target):
    tok = tiny_tokenizer()
    settings = EvalSettings(tokens_per_word=tokens_per_word(tok), max_new_tokens_cap=100_000)
    for control in ("equal", "at_most"):
        budget, limited = settings.budget(target, "en", control)
        length = lifebench_count(_run_away(tok, budget))
        assert not limited and lifebench_ls(length, target, control) <= 2.0, (control, length)
    budget, _ = settings.budget(target, "en", "at_least")
    assert lifebench_ls(lifebench_count(_run_away(tok, budget)), target, "at_least") == 100.0
    budget, _ = settings.budget(target, "en", "equal", metric="longbench")
    assert longbench_sl(lifebench_count(_run_away(tok, budget)), target) == 0.0


def test_the_budget_follows_the_tokenizers_tokens_per_word():
    assert token_budget(100, 3.0, 2.0) > token_budget(100, 3.0, 1.0) * 1.9
    assert zero_score_multiple("equal") == 3.0 and zero_score_multiple("at_least") == 1.5
    assert zero_score_multiple("equal", "longbench") == 4.0
    tok = tiny_tokenizer()  # trained on a tiny corpus: it spends more tokens per word than a real one
    assert tokens_per_word(tok) > 1.0
    assert EvalSettings(tokens_per_word=2.0).budget(64)[0] > EvalSettings(tokens_per_word=1.0).budget(64)[0]
    assert training_budget(64, tok) == token_budget(64, 2.0, tokens_per_word(tok))


def test_a_cut_rollout_has_the_rules_reward():
    assert truncated_reward(150, 128, "equal") == 0.0
    assert truncated_reward(150, 128, "at_most") == 0.0
    assert truncated_reward(300, 128, "at_least") == 1.0
    assert truncated_reward(64, 128, "equal") == 0.5  # cut short of its target: scored by its length so far
    text = " ".join(f"word{i}" for i in range(150))  # not a loop: the degenerate guard stays out
    assert length_score(text, 128) > 0.8  # had it ended there
    assert length_score(text, 128, truncated=True) == 0.0  # it did not: it would have run on
    assert length_score(text, 100, constraint="at_least", truncated=True) == 1.0

    reward = LengthReward(stop_ids=[0])
    prompts = [[{"role": "user", "content": "x"}]] * 2
    completions = [[{"role": "assistant", "content": text}]] * 2
    got = reward(prompts, completions, completion_ids=[[5, 6, 0], [5, 6, 7]], target=[128, 128],
                 constraint=["equal", "equal"])
    assert got[0] > 0.8 and got[1] == 0.0


def test_cut_rollouts_stay_in_the_loss_with_their_rule_reward(tiny_model_dir, tmp_path):
    import json

    # the random tiny model rarely stops: at 64 tokens (~16 of its words) most rollouts are cut past 2x their target
    trainer = two_step_trainer(tiny_model_dir, tmp_path, max_completion_length=64)
    trainer.model.train()
    inputs = trainer._generate_and_score_completions(list(Dataset.from_list(prompt_rows(2)).repeat(2)))
    assert inputs["completion_mask"].sum(dim=1).gt(0).all()  # not masked away (TRL's default, kept)
    trace = [json.loads(x) for x in (tmp_path / "out" / "rollouts.jsonl").read_text().splitlines()]
    cut_past = [r for r in trace if r["truncated"] and r["length"] > r["target"] and r["constraint"] != "at_least"]
    assert cut_past, "the tiny model should run past its target"
    assert all(r["reward/length_reward"] == 0.0 for r in cut_past)
    for r in trace:
        assert r["reward/length_reward"] == length_score(r["text"], r["target"], constraint=r["constraint"],
                                                         degenerate_guard=True, refusal_floor=0.1,
                                                         truncated=r["truncated"])
