"""Best-of-N: N samples, the one with the highest length reward (ties: the first), in the
Python API, `larft generate --best-of` and `larft eval --best-of`."""

import json

import pytest

from larft.best_of import best_of_n, pick_best, pick_worst, sample_groups
from larft.generation import Generation


def _stub(outputs):
    """A generator with known outputs: hands them out in order, records what it was asked."""
    asked = []

    def generate(model, tokenizer, prompts, *, max_new_tokens, do_sample, **kwargs):
        asked.append({"prompts": list(prompts), "budgets": list(max_new_tokens), "do_sample": do_sample})
        texts = [outputs.pop(0) for _ in prompts]
        return [Generation(t, len(t.split()) + 1, False, b) for t, b in zip(texts, max_new_tokens)]

    return generate, asked


def _row(content, target, constraint="equal"):
    return {"prompt": [{"role": "user", "content": content}], "target": target, "constraint": constraint}


def _words(n):
    return " ".join(f"word{i}" for i in range(n))  # distinct words: no loop for the degenerate guard


def test_best_of_n_keeps_the_answer_closest_to_the_target():
    generate, asked = _stub([_words(3), _words(9), _words(12), _words(10),    # row 1: target 10 -> sample 4
                             _words(30), _words(5), _words(1), _words(18)])   # row 2: at_most 20 -> 5 and 18 tie at 1
    rows = [_row("Describe tea.", 10), _row("Describe coffee.", 20, "at_most")]
    groups = best_of_n(None, None, rows, 4, max_new_tokens=[32, 64], generate=generate)
    # every prompt sampled N times, side by side, each copy with its row's budget, sampling on
    assert asked[0]["prompts"] == [rows[0]["prompt"]] * 4 + [rows[1]["prompt"]] * 4
    assert asked[0]["budgets"] == [32] * 4 + [64] * 4 and asked[0]["do_sample"] is True
    first, second = groups
    assert first.rewards == pytest.approx([0.3, 0.9, 0.8, 1.0])
    assert first.best_index == 3 and first.text == _words(10) and first.reward == 1.0
    # at_most 20: 30 words is over, 1 word is a refusal (0), 5 and 18 are both inside: the first wins
    assert second.rewards == pytest.approx([0.5, 1.0, 0.0, 1.0])
    assert second.best_index == 1 and second.text == _words(5)
    assert first.gen_tokens == 4 + 10 + 13 + 11  # every sample counted: the cost of best-of-N


def test_the_reward_reads_reasoning_refusals_and_loops_like_the_training_reward():
    looping = "the cat sat " * 6  # 18 words, looping: the degenerate guard scores it 0
    generate, _ = _stub(["<think>" + _words(40) + "</think>" + _words(7), looping.strip(), _words(8)])
    (group,) = sample_groups(None, None, [_row("Describe tea.", 18)], 3, max_new_tokens=64, generate=generate)
    assert group.rewards[1] == 0.0
    assert group.rewards[0] == pytest.approx(7 / 18)  # only the answer after the reasoning counts
    assert group.best_index == 2 and group.text == _words(8)
    assert group.samples[0].text.startswith("<think>")  # raw sample kept (what a trainer trains on)


def test_ties_go_to_the_first_and_bad_input_is_a_clear_error():
    assert pick_best([0.5, 1.0, 1.0]) == 1 and pick_worst([0.2, 0.7, 0.2]) == 0
    with pytest.raises(ValueError, match="no samples"):
        pick_best([])
    with pytest.raises(ValueError, match="N must be >= 1"):
        best_of_n(None, None, [_row("x", 5)], 0, max_new_tokens=8, generate=_stub([])[0])
    with pytest.raises(KeyError, match="neither 'target'"):
        best_of_n(None, None, [{"prompt": [{"role": "user", "content": "x"}]}], 2, max_new_tokens=8,
                  generate=_stub([])[0])


def test_generate_best_of_on_a_tiny_model(tiny_model_dir, capsys):
    from larft.cli import main

    assert main(["generate", "--model", str(tiny_model_dir), "--prompt", "Describe tea.", "--words", "6",
                 "--best-of", "3", "--max_new_tokens", "12"]) == 0
    out = capsys.readouterr().out
    assert "best of 3: sample" in out and "tokens generated]" in out
    assert main(["generate", "--model", str(tiny_model_dir), "--prompt", "x", "--best-of", "3"]) == 2
    assert "--best-of needs a length target" in capsys.readouterr().err
    assert main(["generate", "--model", str(tiny_model_dir), "--prompt", "Describe tea.", "--words", "6",
                 "--best-of", "3", "--max_new_tokens", "12", "--backend", "ct2"]) == 0
    assert "best of 3: sample" in capsys.readouterr().out


def test_generate_with_ct2_prints_the_same_greedy_answer_as_hf(tiny_model_dir, capsys):
    from larft.cli import main

    answers = {}
    for backend in ("hf", "ct2"):
        assert main(["generate", "--model", str(tiny_model_dir), "--prompt", "Describe tea.", "--words", "6",
                     "--max_new_tokens", "16", "--backend", backend]) == 0
        answers[backend] = capsys.readouterr().out
    assert answers["ct2"] == answers["hf"] and "asked equal 6" in answers["hf"]
    assert main(["generate", "--model", str(tiny_model_dir), "--prompt", "x", "--backend", "llamacpp"]) == 2


def _lifebench_file(tmp_path):
    path = tmp_path / "life.jsonl"
    tasks = ["Describe the history of tea.", "Explain how bridges work."]
    path.write_text("\n".join(json.dumps({
        "id": i, "category": "create", "type": "test", "lang": "en", "raw_data": "",
        "task": f"{t} The answer must be {{word_count_type}} {{word_count}} words long.",
    }) for i, t in enumerate(tasks, 1)) + "\n")
    return [(str(path), "lifebench")]


def test_eval_best_of_scores_the_best_sample_and_records_its_cost(tiny_model_dir, tmp_path, monkeypatch):
    import larft.generation as generation
    from larft.eval.runner import EvalSettings, run_eval

    real = generation.generate_records
    calls = []

    def counted(model, tokenizer, prompts, **kw):
        calls.append((len(prompts), kw["do_sample"]))
        return real(model, tokenizer, prompts, **kw)

    monkeypatch.setattr(generation, "generate_records", counted)
    settings = lambda **kw: EvalSettings(max_new_tokens_cap=40, tokens_per_word=0.07, limit=3, bootstrap=20,  # noqa: E731
                                         filters={"lang": "en", "max_length": "16"}, batch_size=8, **kw)
    out = str(tmp_path / "eval")
    results = run_eval(str(tiny_model_dir), [], out, settings(best_of=3, seed=1), bench_files=_lifebench_file(tmp_path))
    assert sum(n for n, _ in calls) == 9 and all(sample for _, sample in calls)  # 3 prompts x 3 samples, sampled
    bench = results["benchmarks"]["lifebench:life"]
    samples = bench["samples"]
    for x in samples:
        assert len(x["best_of_rewards"]) == 3 and x["gen_tokens"] >= x["new_tokens"]
    assert bench["metrics"]["best_of"] == 3
    assert bench["metrics"]["gen_tokens_per_prompt"] == pytest.approx(sum(x["gen_tokens"] for x in samples) / 3)
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["settings"]["best_of"] == 3 and "Best of 3" in (tmp_path / "eval" / "report.md").read_text()
    # the chosen sample is the one with the highest reward: rescore every cached sample
    from larft.best_of import pick_best, row_rewards
    from larft.length import final_text

    cache = [json.loads(line) for line in (tmp_path / "eval" / "generations.jsonl").read_text().splitlines()]
    assert all("-best3/" in c["key"] for c in cache) and len(cache) == 9
    for x in samples:
        own = [c for c in cache if c["key"].startswith(f"lifebench:life/{x['id']}#")]
        rewards = row_rewards([final_text(c["output"]) for c in own], {"target": x["target"], "constraint": x["control"]},
                              truncated=[c["truncated"] for c in own])  # a sample cut at its cap: the rule's reward
        assert rewards == pytest.approx(x["best_of_rewards"])
        chosen = [c for c in cache if c["key"].startswith(f"lifebench:life/{x['id']}#{pick_best(rewards)}/")][0]
        assert chosen["new_tokens"] == x["new_tokens"]
    # N is part of the cache key: the same run is all cached, best-of-1 (greedy) generates again
    run_eval(str(tiny_model_dir), [], out, settings(best_of=3, seed=1), bench_files=_lifebench_file(tmp_path))
    assert sum(n for n, _ in calls) == 9
    plain = run_eval(str(tiny_model_dir), [], out, settings(seed=1), bench_files=_lifebench_file(tmp_path))
    assert sum(n for n, _ in calls) == 12 and calls[-1][1] is False
    metrics = plain["benchmarks"]["lifebench:life"]["metrics"]
    assert metrics["best_of"] == 1
    assert metrics["gen_tokens_per_prompt"] == pytest.approx(
        sum(x["new_tokens"] for x in plain["benchmarks"]["lifebench:life"]["samples"]) / 3)
    with pytest.raises(ValueError, match="--best-of must be >= 1"):
        run_eval(str(tiny_model_dir), [], out, settings(best_of=0), bench_files=_lifebench_file(tmp_path))


@pytest.mark.parametrize("backend", ["hf", "ct2"])
def test_the_n_samples_of_a_prompt_differ_on_every_backend(tiny_model_dir, tmp_path, backend):
    """Sampled copies of one prompt share a batch (and on ct2 a seed): they must still be N draws."""
    if backend == "ct2":
        pytest.importorskip("ctranslate2")
    from larft.eval.runner import EvalSettings, run_eval

    settings = EvalSettings(max_new_tokens_cap=40, tokens_per_word=0.07, limit=2, bootstrap=20, best_of=4, seed=3,
                            filters={"lang": "en", "max_length": "16"}, backend=backend)
    results = run_eval(str(tiny_model_dir), [], str(tmp_path / backend), settings, bench_files=_lifebench_file(tmp_path))
    cache = [json.loads(line) for line in (tmp_path / backend / "generations.jsonl").read_text().splitlines()]
    assert len(cache) == 8
    for x in results["benchmarks"]["lifebench:life"]["samples"]:
        outputs = [c["output"] for c in cache if c["key"].startswith(f"lifebench:life/{x['id']}#")]
        assert len(outputs) == 4 and len(set(outputs)) > 1
