"""`larft train --method rft / dpo`: rejection-sampling SFT and length DPO on the model's own
samples, with the sampling budget of the GRPO run of the same settings."""

import json
import math
import re

import pytest
import torch

from larft.baselines import dpo_pairs, grpo_rollouts, rft_examples, round_prompts
from larft.best_of import SampleGroup
from larft.cli import parse_train_args
from larft.generation import Generation


def _group(prompt, texts_rewards, truncated=()):
    row = {"prompt": [{"role": "user", "content": prompt}], "target": 10}
    samples = [Generation(t, 5, i in truncated, 16) for i, (t, _) in enumerate(texts_rewards)]
    return SampleGroup(row, samples, [r for _, r in texts_rewards])


def test_rft_keeps_only_answers_at_or_over_the_threshold():
    groups = [_group("a", [("a1", 0.95), ("a2", 0.5), ("a3", 0.8)]), _group("b", [("b1", 0.1), ("b2", 0.79)]),
              _group("c", [("c1", 1.0), ("c2", 0.9)], truncated={0})]
    kept = rft_examples(groups, 0.8)
    assert [x["completion"][0]["content"] for x in kept] == ["a1", "a3", "c1", "c2"]
    assert kept[0]["prompt"] == groups[0].row["prompt"] and kept[0]["completion"][0]["role"] == "assistant"
    # with mask_truncated_completions, an answer cut off at the budget is never kept
    assert [x["completion"][0]["content"] for x in rft_examples(groups, 0.8, skip_truncated=True)] == ["a1", "a3", "c2"]


def test_dpo_pairs_are_best_over_worst_and_ties_give_none():
    groups = [_group("a", [("a1", 0.4), ("a2", 0.9), ("a3", 0.1), ("a4", 0.9)]),
              _group("tie", [("t1", 0.5), ("t2", 0.5)]),
              _group("b", [("b1", 0.0), ("b2", 0.3), ("b3", 0.0)])]
    pairs = dpo_pairs(groups)
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [("a2", "a3"), ("b2", "b1")]
    assert all(p["chosen_reward"] > p["rejected_reward"] for p in pairs)
    # truncated samples are left out when masked: "b" keeps b2 and b3 only
    masked = dpo_pairs([_group("b", [("b1", 0.0), ("b2", 0.3), ("b3", 0.0)], truncated={0})], skip_truncated=True)
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in masked] == [("b2", "b3")]


def test_the_budget_is_the_grpo_runs_sampled_completions_split_over_rounds(tmp_path):
    _, config = parse_train_args(["--output_dir", str(tmp_path), "--max_steps", "10", "--per_device_train_batch_size",
                                  "8", "--gradient_accumulation_steps", "2", "--num_generations", "4"])
    assert grpo_rollouts(config, 100) == 10 * 8 * 2  # one GRPO rollout per sequence trained on
    rows = [{"i": i} for i in range(7)]
    parts = round_prompts(rows, 40, 4, seed=0)
    assert [len(p) for p in parts] == [10] * 4
    flat = [r["i"] for p in parts for r in p]
    assert sorted(flat[:7]) == list(range(7)) and sorted(flat[7:14]) == list(range(7))  # every row once per pass
    assert parts == round_prompts(rows, 40, 4, seed=0) and parts != round_prompts(rows, 40, 4, seed=1)
    assert [len(p) for p in round_prompts(rows, 10, 3, seed=0)] == [3, 3, 4]
    with pytest.raises(ValueError, match="--baseline_rounds 5 is more than the 4 prompts"):
        round_prompts(rows, 4, 5, seed=0)


def _args(model_dir, out, method, *extra):
    # 2 steps x 4 sequences = 8 GRPO rollouts = 2 prompts x 4 samples, one round
    return ["--model", str(model_dir), "--output_dir", str(out), "--method", method, "--max_steps", "2",
            "--per_device_train_batch_size", "4", "--num_generations", "4", "--max_completion_length", "16",
            "--train_size", "6", "--baseline_rounds", "1", "--report_to", "none", "--learning_rate", "1e-3", *extra]


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def _one_round(model_dir, out, method, *extra) -> tuple[dict, list[dict]]:
    """`larft train --method METHOD` for one round on the tiny model (the CLI, in this process: it
    chooses the method): its metrics line and rollouts."""
    from larft.cli import main

    assert main(["train", "--debug", *_args(model_dir, out, method, *extra)]) == 0
    (metrics,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return metrics, [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]


def _record_sft_examples(monkeypatch) -> list:
    """The examples every SFT round of the run trains on, recorded as they pass (the round still runs)."""
    import larft.baselines as baselines

    seen = []
    real = baselines.sft_round

    def recorded(model, tokenizer, examples, config, epochs):
        seen.extend(examples)
        return real(model, tokenizer, examples, config, epochs)

    monkeypatch.setattr(baselines, "sft_round", recorded)
    return seen


def test_rft_round_trains_on_the_kept_answers_and_changes_the_weights(tiny_model_dir, tmp_path, monkeypatch):
    seen = _record_sft_examples(monkeypatch)
    out = tmp_path / "rft"
    # about 6 words: the random model's answers score from 0.5 to 1, some over the threshold, some not
    metrics, rollouts = _one_round(tiny_model_dir, out, "rft", "--train_targets", "6", "--train_constraints", "equal",
                                   "--rft_threshold", "0.9", "--length_check_prompts", "2")
    assert metrics["samples"] == len(rollouts) == 8 and metrics["prompts"] == 2
    assert metrics["gen_tokens"] == metrics["gen_tokens_total"] > 0
    over = [r for r in rollouts if r["reward/length_reward"] >= 0.9]
    assert 0 < metrics["kept"] == len(seen) == len(over) < metrics["samples"]  # some kept, some not
    assert sorted(x["completion"][0]["content"] for x in seen) == sorted(r["text"] for r in over)
    assert metrics["train_steps"] >= 1 and math.isfinite(metrics["train_loss"]) and metrics["step_seconds"] > 0
    before, after = _weights(tiny_model_dir), _weights(out)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the SFT step moved the model
    assert (out / "tokenizer_config.json").exists()
    run = json.loads((out / "larft_run.json").read_text())
    assert run["method"] == "rft" and run["budget"]["grpo_rollouts"] == 8 and len(run["held_out"]) == 2
    check = json.loads((out / "length_check.json").read_text())
    assert len(check["before"]) == len(check["after"]) == 2


def test_dpo_round_trains_on_best_worst_pairs_with_a_finite_loss(tiny_model_dir, tmp_path, monkeypatch):
    import larft.baselines as baselines

    seen = []
    real = baselines.dpo_round

    def recorded(model, ref_model, tokenizer, pairs, config, beta, epochs):
        seen.extend(pairs)
        assert ref_model is not model and beta == 0.2
        return real(model, ref_model, tokenizer, pairs, config, beta, epochs)

    monkeypatch.setattr(baselines, "dpo_round", recorded)
    out = tmp_path / "dpo"
    metrics, _ = _one_round(tiny_model_dir, out, "dpo", "--train_targets", "6", "--train_constraints", "equal",
                            "--dpo_beta", "0.2")
    assert 0 < metrics["pairs"] == len(seen) <= 2
    assert all(p["chosen_reward"] > p["rejected_reward"] for p in seen)
    assert metrics["train_steps"] == 1 and math.isfinite(metrics["train_loss"])
    assert metrics["samples"] == 8 and metrics["gen_tokens"] > 0
    assert (out / "model.safetensors").exists()


def test_baseline_options_are_checked_before_anything_runs(tmp_path):
    from larft.cli import UsageError

    for argv, message in ((["--method", "ppo"], "--method: unknown value 'ppo'"),
                          (["--method", "rft", "--lora_r", "8"], "does not support --use_peft"),
                          (["--method", "dpo", "--reward_funcs", "x.y"], "does not support --reward_funcs"),
                          (["--method", "rft", "--rft_threshold", "1.5"], "--rft_threshold must be in"),
                          (["--baseline_rounds", "0"], "--baseline_rounds must be >= 1")):
        with pytest.raises(UsageError, match=message):
            parse_train_args([*argv, "--output_dir", str(tmp_path)])


def test_the_baselines_are_train_baseline_and_larft_train_refuses_them(tmp_path):
    from larft.train import train

    with pytest.raises(ValueError, match=r"--method rft is larft\.baselines\.train_baseline"):
        train(*parse_train_args(["--method", "rft", "--output_dir", str(tmp_path / "o")]))
    assert not (tmp_path / "o").exists()


def test_train_help_lists_the_method_and_the_baseline_options(capsys):
    from larft.cli import main

    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--method", "--baseline_rounds", "--rft_threshold", "--rft_epochs", "--dpo_beta", "--dpo_epochs"):
        assert option in out


def test_the_ct2_rollout_backend_samples_each_round_from_the_current_weights(tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("ctranslate2")
    from larft.baselines import train_baseline
    from larft.ct2_engine import CT2Engine

    synced = []
    real = CT2Engine.sync

    def sync(self, model):
        synced.append(sum(p.detach().double().sum().item() for p in model.parameters()))
        return real(self, model)

    monkeypatch.setattr(CT2Engine, "sync", sync)
    out = tmp_path / "rft-ct2"
    argv = _args(tiny_model_dir, out, "rft", "--train_targets", "6", "--train_constraints", "equal",
                 "--rft_threshold", "0", "--rollout_backend", "ct2")
    argv[argv.index("--max_steps") + 1], argv[argv.index("--baseline_rounds") + 1] = "4", "2"  # 2 rounds of 2 prompts
    train_baseline(*parse_train_args(argv))
    rounds = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["rollout_backend"] for r in rounds] == ["ct2", "ct2"] and all(r["samples"] == 8 for r in rounds)
    assert len(synced) == 2 and synced[0] != synced[1]  # round 2 sampled from the weights round 1 trained


def test_hir_relabels_each_finished_answer_with_its_true_length():
    from larft.baselines import hir_examples, relabel_prompt

    row = {"prompt": [{"role": "system", "content": "Be brief, 64 times over."},
                      {"role": "user", "content": "In about 64 words, describe tea (not 164, 6.4 or 64.5)."}],
           "target": 64}
    # only the user's standalone 64 changes: not 164, 6.4, 64.5 or the system message's 64
    assert relabel_prompt(row, 7)[1]["content"] == "In about 7 words, describe tea (not 164, 6.4 or 64.5)."
    assert relabel_prompt(row, 7)[0] == row["prompt"][0] and row["prompt"][1]["content"].startswith("In about 64")
    # the number twice, not at all, a range or a plain string prompt: no safe relabel
    twice = {"prompt": [{"role": "user", "content": "64 words, exactly 64."}], "target": 64}
    absent = {"prompt": [{"role": "user", "content": "sixty-four words"}], "target": 64}
    ranged = {"prompt": [{"role": "user", "content": "In 8 to 12 words."}], "constraint": "range", "target_range": [8, 12]}
    text = {"prompt": "In about 64 words.", "target": 64}
    assert [relabel_prompt(r, 7) for r in (twice, absent, ranged, text)] == [None] * 4

    groups = [_group("In about 10 words, say hi.", [("one two three", 0.3), ("cut off here and", 0.5), ("x", 0.1)],
                     truncated={1}),
              SampleGroup(twice, [Generation("a b", 2, False, 4)], [0.0])]
    kept = hir_examples(groups)
    # the finished 3-word answer only: the cut one's length is the budget's, a 1-word one is a refusal,
    # and the second prompt cannot be relabelled
    assert [(x["prompt"][-1]["content"], x["completion"][0]["content"], x["length"]) for x in kept] == \
        [("In about 3 words, say hi.", "one two three", 3)]


def test_hir_round_trains_on_relabelled_finished_answers(tiny_model_dir, tmp_path, monkeypatch):
    from larft.length import count_words

    seen = _record_sft_examples(monkeypatch)
    out = tmp_path / "hir"
    metrics, rollouts = _one_round(tiny_model_dir, out, "hir", "--train_targets", "6", "--train_constraints", "equal",
                                   "--train_styles", "plain", "--max_completion_length", "64")
    finished = [r for r in rollouts if not r["truncated"] and r["length"] > 1]
    assert metrics["kept"] == len(seen) == len(finished)
    assert sorted(x["completion"][0]["content"] for x in seen) == sorted(r["text"] for r in finished)
    assert 0 < len(finished) < len(rollouts)  # the budget cut some answers: those are not trained on
    for x in seen:  # each prompt now asks for the length its answer has
        assert x["length"] == count_words(x["completion"][0]["content"])
        assert re.search(rf"(?<!\d){x['length']} words", x["prompt"][-1]["content"])
        assert not re.search(r"(?<!\d)6 words", x["prompt"][-1]["content"]) or x["length"] == 6
    before, after = _weights(tiny_model_dir), _weights(out)
    assert any(not torch.equal(before[k], after[k]) for k in before)
