"""One definition of where a rollout ends (larft.rollout_end): with a generation config that lists
several eos ids (as Llama 3's does), the length reward, truncated_rate, rollouts.jsonl and the awareness
label agree on every rollout's text and on whether it was cut."""

import json

import pytest

from helpers import prompt_rows, tiny_trainer
from larft.rollout_end import rollout_end, rollout_stop_ids, turn_end_ids


def test_a_rollout_ends_at_its_first_stop_id():
    assert rollout_end([5, 6, 9, 7, 9], {9}) == (2, False)
    assert rollout_end([5, 6, 7], {9}) == (3, True)
    assert rollout_end([], {9}) == (0, True)


class _Tok:
    eos_token_id, pad_token_id = 2, 0


class _GenerationConfig:
    eos_token_id = [2, 7, 8]


def test_every_eos_id_of_the_generation_config_ends_a_turn():
    assert turn_end_ids(_GenerationConfig(), _Tok()) == {2, 7, 8}
    assert rollout_stop_ids([2, 7, 8], _Tok()) == {0, 2, 7, 8}  # training: the pad TRL fills with too


@pytest.fixture(scope="module")
def several_eos_model(tmp_path_factory):
    """The tiny model with two extra end-of-turn tokens in its generation config (Llama 3 style)."""
    from tiny import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|eot_id|>", "<|eom_id|>"]})
    model = tiny_model(tok)
    eot, eom = tok.convert_tokens_to_ids(["<|eot_id|>", "<|eom_id|>"])
    model.generation_config.eos_token_id = [tok.eos_token_id, eot, eom]
    path = tmp_path_factory.mktemp("several-eos")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, eot, eom


def test_reward_truncation_trace_and_awareness_label_agree(several_eos_model, tmp_path):
    path, eot, eom = several_eos_model
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    words = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    # per prompt (2 rollouts each): ends at <|eot_id|>; ends at <|eom_id|> as the longest row (no pad
    # after it in TRL's padded tensor); no stop at all (cut at its budget, then padded by TRL)
    completions = [words("the quick brown") + [eot], words("the quick brown fox jumps over the lazy dog") + [eom],
                   words("the quick brown fox"), words("the quick") + [eom]]

    def rollouts(prompts, trainer):
        ids = trainer._tokenize_prompts(prompts)[0]
        return {"prompt_ids": [list(p) for p in ids], "completion_ids": [list(c) for c in completions],
                "logprobs": None}

    rows = [{**r, "target": 8, "constraint": "equal"} for r in prompt_rows(2)]  # "the quick ... dog" has 9 words
    trainer = tiny_trainer(path, tmp_path / "out", rows=rows, rollout_func=rollouts, max_completion_length=16,
                           awareness_lambda_max=1.0, log_rollouts=True)
    assert {eot, eom} <= trainer.rollout_stop_ids
    trainer.model.train()
    inputs = [rows[0], rows[0], rows[1], rows[1]]
    out = trainer._generate_and_score_completions(inputs)

    trace = [json.loads(line) for line in (tmp_path / "out" / "rollouts.jsonl").read_text().splitlines()]
    assert [r["truncated"] for r in trace] == [False, False, True, False]
    assert [r["length"] for r in trace] == [3, 9, 4, 2]
    assert trainer._metrics["train"]["truncated_rate"][-1] == pytest.approx(0.25)
    rewards = [r["reward/length_reward"] for r in trace]
    assert rewards[1] == pytest.approx(1 - 1 / 8)  # 9 words for 8, finished: not scored as a cut rollout (0)
    assert rewards[2] == pytest.approx(0.5)  # cut at 4 words of 8: scored by its length so far
    # the awareness label of each rollout is its text's count, the text the reward scored
    labels = []
    for row in out["awareness_labels"]:
        text = tok.decode([t for t in row.tolist() if t != -100], skip_special_tokens=False)
        labels.append(int(text.split("<word_count>")[1].split("</word_count>")[0]))
    assert labels == [r["length"] for r in trace]
