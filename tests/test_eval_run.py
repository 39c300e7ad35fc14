import json

import pytest

from larft.eval import benchmarks as B
from larft.eval.runner import EvalSettings, parse_filters, run_eval, select


def _shared_data():
    """The benchmark files of ../shared/benchmarks (CI has them); skip where a checkout lacks them."""
    try:
        return B.benchmark_data_dir()
    except FileNotFoundError as e:
        pytest.skip(str(e))


def _lifebench_file(tmp_path):
    """A small file in LIFEBench's format (the product must work on user files too)."""
    path = tmp_path / "life.jsonl"
    tasks = ["Describe the history of tea.", "Explain how bridges work.", "Write about autumn.", "Discuss sleep."]
    path.write_text("\n".join(json.dumps({
        "id": i, "category": "create", "type": "test", "lang": "en", "raw_data": "",
        "task": f"{t} The answer must be {{word_count_type}} {{word_count}} words long.",
    }) for i, t in enumerate(tasks, 1)) + "\n")
    return path


def test_lifebench_lite_expands_to_1800_prompts_as_upstream():
    items = B.lifebench_items(_shared_data() / "lifebench" / "data_lite.jsonl")
    assert len(items) == 1800
    assert len({it.id for it in items}) == 1800
    en = [it for it in items if it.lang == "en" and it.control == "at_most" and it.target == 64]
    assert en and all("at most 64 words" in it.messages[0]["content"] for it in en)
    cn = [it for it in items if it.lang == "cn" and it.control == "at_least" and it.target == 16]
    assert cn and all("至少有" in it.messages[0]["content"] and "{word_count" not in it.messages[0]["content"] for it in cn)
    picked = select(items, EvalSettings(filters=parse_filters("lang=en,max_length=64")), "lifebench")
    assert len(picked) == 30 * 3 * 3 and {it.target for it in picked} == {16, 32, 64}


def test_refactor_and_longwrite_targets_are_read_from_the_files():
    refactor = B.lifebench_refactor_items(_shared_data() / "lifebench" / "data_refactor.jsonl")
    assert len(refactor) == 180 and {it.target for it in refactor} == set(B.LIFEBENCH_LENGTHS)
    ruler = B.longbench_write_items(_shared_data() / "longwrite-ruler" / "longwrite_ruler.jsonl")
    assert len(ruler) == 48 and {it.lang for it in ruler} == {"en", "cn"}


def test_bad_filters_and_files_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown key"):
        parse_filters("language=en")
    bad = tmp_path / "lw.jsonl"
    bad.write_text(json.dumps({"prompt": "Write 100 words", "length": 100}) + "\n" + json.dumps({"prompt": "x"}) + "\n")
    with pytest.raises(Exception, match="lw.jsonl:2: length: missing"):
        B.longbench_write_items(bad)


def test_end_to_end_eval_writes_all_outputs(tiny_model_dir, tmp_path):
    lenctrl = tmp_path / "lenctrl.jsonl"
    lenctrl.write_text("\n".join(json.dumps({"instruction": f"Write {n} words about tea.", "constraint": n,
                                             "level": "word"}) for n in (5, 10)) + "\n")
    settings = EvalSettings(batch_size=4, max_new_tokens_cap=64, tokens_per_word=0.15, limit=4,
                            filters={"lang": "en", "max_length": "32"}, counting_own=2, bootstrap=50)
    out = tmp_path / "eval"
    results = run_eval(str(tiny_model_dir), ["ruler-tlg", "counting", "retention"], str(out), settings,
                       bench_files=[(str(_lifebench_file(tmp_path)), "lifebench"), (str(lenctrl), "lenctrl")])
    for name in ("results.json", "report.md", "asked_vs_delivered.png", "ls_by_length.png", "counting_errors.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["benchmarks"]) == {"lifebench:life", "ruler-tlg", "counting", "retention", "lenctrl:lenctrl"}
    assert saved["benchmarks"]["lifebench:life"]["metrics"]["n"] == 4
    assert saved["benchmarks"]["retention"]["metrics"]["perplexity"] > 1
    assert saved["model"] == str(tiny_model_dir) and "torch" in saved["versions"]
    assert "## lifebench:life" in (out / "report.md").read_text()
    for name, buckets in (("lifebench:life", "per_length"), ("ruler-tlg", "per_length"), ("lenctrl:lenctrl", "per_level")):
        bench = saved["benchmarks"][name]  # answer health beside every length benchmark's score
        assert bench["metrics"]["health"]["n"] == len(bench["samples"]) and bench["metrics"]["health"][buckets]
        assert all(isinstance(x["ends_on_sentence"], bool) and "loops" in x for x in bench["samples"])
    assert set(saved["benchmarks"]["lifebench:life"]["metrics"]["health"]["per_length"]) <= {"16", "32"}
    assert "Answer health" in (out / "report.md").read_text()
    assert "lifebench:life loops%" in results["summary"]
    assert results["summary"]["retention perplexity"] == saved["benchmarks"]["retention"]["metrics"]["perplexity"]


def test_interrupted_eval_resumes_without_regenerating(tiny_model_dir, tmp_path, monkeypatch):
    import larft.generation as generation

    real = generation.generate_records
    seen: list[str] = []

    def counting_generate(model, tokenizer, prompts, **kw):
        seen.extend(p[0]["content"] for p in prompts)
        return real(model, tokenizer, prompts, **kw)

    def interrupted_generate(model, tokenizer, prompts, **kw):
        if len(seen) >= 4:
            raise KeyboardInterrupt  # the user pressed Ctrl-C after two batches
        return counting_generate(model, tokenizer, prompts, **kw)

    settings = EvalSettings(batch_size=2, max_new_tokens_cap=40, tokens_per_word=0.07, limit=8,
                            filters={"lang": "en", "max_length": "16"}, bootstrap=20)
    out = tmp_path / "eval"
    monkeypatch.setattr(generation, "generate_records", interrupted_generate)
    life = [(str(_lifebench_file(tmp_path)), "lifebench")]
    with pytest.raises(KeyboardInterrupt):
        run_eval(str(tiny_model_dir), [], str(out), settings, bench_files=life)
    first = list(seen)
    assert len(first) == 4
    cache = out / "generations.jsonl"
    lines = cache.read_text().splitlines()
    assert len(lines) == 4
    cache.write_text("\n".join(lines[:3]) + "\n" + lines[3][:10])  # a kill cut the last line mid-write

    seen.clear()
    monkeypatch.setattr(generation, "generate_records", counting_generate)
    run_eval(str(tiny_model_dir), [], str(out), settings, bench_files=life)
    keys = [json.loads(line)["key"] for line in cache.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 8  # every prompt once, none lost
    assert len(seen) == 5  # the 4 never generated + the 1 whose line was cut
    assert not set(seen) & set(first[:3])


def test_evaluation_prompts_do_not_overlap_training_topics():
    from larft.data import TOPICS

    assert not set(TOPICS) & set(B.EVAL_TOPICS)
    assert len(B.ruler_instructions()) == 4 * len(B.EVAL_TOPICS)


def _life_settings(**kw):
    base = dict(max_new_tokens_cap=64, tokens_per_word=0.15, limit=12, filters={"lang": "en", "max_length": "32"},
                bootstrap=50)
    base.update(kw)
    return EvalSettings(**base)


def test_each_prompt_gets_its_own_budget_and_greedy_lengths_do_not_depend_on_batch_size(tiny_model_dir, tmp_path):
    life = [(str(_lifebench_file(tmp_path)), "lifebench")]
    one = run_eval(str(tiny_model_dir), [], str(tmp_path / "b1"), _life_settings(batch_size=1), bench_files=life)
    eight = run_eval(str(tiny_model_dir), [], str(tmp_path / "b8"), _life_settings(batch_size=8), bench_files=life)
    s1 = {x["id"]: x for x in one["benchmarks"]["lifebench:life"]["samples"]}
    s8 = {x["id"]: x for x in eight["benchmarks"]["lifebench:life"]["samples"]}
    assert s1.keys() == s8.keys() and len(s1) == 12
    assert {k: v["length"] for k, v in s1.items()} == {k: v["length"] for k, v in s8.items()}
    settings = _life_settings()
    budgets = set()
    for x in s8.values():
        own = settings.max_new_tokens(x["target"], x["lang"], x["control"])
        budgets.add(own)
        assert x["max_new_tokens"] == own  # its own budget, not the batch's largest
        assert x["new_tokens"] <= own and x["truncated"] == (x["new_tokens"] == own)
    assert len(budgets) > 1  # the batch of 8 really mixed budgets


def test_the_ct2_backend_gives_the_same_greedy_answers_and_budgets_as_hf(tiny_model_dir, tmp_path):
    life = [(str(_lifebench_file(tmp_path)), "lifebench")]
    hf = run_eval(str(tiny_model_dir), [], str(tmp_path / "hf"), _life_settings(batch_size=8), bench_files=life)
    ct2 = run_eval(str(tiny_model_dir), [], str(tmp_path / "ct2"), _life_settings(batch_size=8, backend="ct2"),
                   bench_files=life)
    fields = ("length", "max_new_tokens", "new_tokens", "truncated")
    want = {x["id"]: tuple(x.get(f) for f in fields) for x in hf["benchmarks"]["lifebench:life"]["samples"]}
    got = {x["id"]: tuple(x.get(f) for f in fields) for x in ct2["benchmarks"]["lifebench:life"]["samples"]}
    assert len(want) == 12 and got == want
    texts = lambda run: sorted(json.loads(x)["output"] for x in (tmp_path / run / "generations.jsonl").open())  # noqa: E731
    assert texts("ct2") == texts("hf")


def test_a_changed_budget_or_decoding_setting_regenerates(tiny_model_dir, tmp_path, monkeypatch):
    import larft.generation as generation

    real = generation.generate_records
    calls: list[int] = []

    def counted(model, tokenizer, prompts, **kw):
        calls.append(len(prompts))
        return real(model, tokenizer, prompts, **kw)

    monkeypatch.setattr(generation, "generate_records", counted)
    life = [(str(_lifebench_file(tmp_path)), "lifebench")]
    out = str(tmp_path / "eval")
    run_eval(str(tiny_model_dir), [], out, _life_settings(limit=4), bench_files=life)
    assert sum(calls) == 4
    run_eval(str(tiny_model_dir), [], out, _life_settings(limit=4), bench_files=life)
    assert sum(calls) == 4  # same settings: all from the cache
    run_eval(str(tiny_model_dir), [], out, _life_settings(limit=4, tokens_per_word=0.22), bench_files=life)
    assert sum(calls) == 8  # other budgets: generated again, not reused
    run_eval(str(tiny_model_dir), [], out, _life_settings(limit=4, tokens_per_word=0.22, do_sample=True),
             bench_files=life)
    assert sum(calls) == 12  # sampling instead of greedy: generated again


def test_unreachable_targets_are_listed_and_kept_out_of_the_headline(tiny_model_dir, tmp_path):
    life = [(str(_lifebench_file(tmp_path)), "lifebench")]
    settings = _life_settings(limit=None, filters={"lang": "en", "max_length": "64"}, max_new_tokens_cap=48)
    results = run_eval(str(tiny_model_dir), [], str(tmp_path / "e"), settings, bench_files=life)
    bench = results["benchmarks"]["lifebench:life"]
    limited = set(bench["budget_limited"])
    assert limited and all(settings.budget(x, "en", c)[1] for x, c in
                           [(int(i.split("-")[-1]), i.split("-", 1)[1].rsplit("-", 1)[0]) for i in limited])
    assert not limited & {x["id"] for x in bench["samples"]}
    assert bench["metrics"]["n"] == 4 * 3 * 3 - len(limited)
    assert "Not scored" in (tmp_path / "e" / "report.md").read_text()


def test_results_carry_intervals_refusals_and_split_counting_figures(tiny_model_dir, tmp_path):
    life = [(str(_lifebench_file(tmp_path)), "lifebench")]
    results = run_eval(str(tiny_model_dir), ["counting"], str(tmp_path / "e"), _life_settings(counting_own=2, limit=6),
                       bench_files=life)
    m = results["benchmarks"]["lifebench:life"]["metrics"]
    lo, hi = m["ci95"]["LS"]
    assert lo <= m["LS"] <= hi
    assert set(m["refusals"]["per_control"]) <= {"equal", "at_most", "at_least"}
    c = results["benchmarks"]["counting"]["metrics"]
    for key in ("format_rate", "mae_parsed", "within10_rate", "mae_all", "definitions"):
        assert key in c
    assert "MAE" not in c and "MAE_all" not in c  # no figure that is really a text length under a counting name
    report = (tmp_path / "e" / "report.md").read_text()
    assert "95%" in report and "refusals" in report


@pytest.mark.subprocess
def test_bad_bench_files_and_options_are_one_clear_error(tmp_path):
    from helpers import larft

    bad = tmp_path / "lenctrl.jsonl"
    bad.write_text(json.dumps({"instruction": "Write 5 words.", "constraint": 5, "level": "word"}) + "\n"
                   + json.dumps({"instruction": "Write.", "constraint": 0, "level": "word"}) + "\n")
    out = larft("eval", "--bench-file", str(bad), "--format", "lenctrl", "--out", str(tmp_path / "e"))
    assert out.returncode == 2 and f"{bad}:2: constraint: must be a positive count" in out.stderr
    notjson = tmp_path / "lw.jsonl"
    notjson.write_text('{"prompt": "x", "length": 5}\n{"prompt": \n')
    out = larft("eval", "--bench-file", str(notjson), "--format", "longbench-write", "--out", str(tmp_path / "e"))
    assert out.returncode == 2 and f"{notjson}:2:" in out.stderr and "malformed JSON" in out.stderr
    out = larft("eval", "--bench", "retention", "--out", str(tmp_path / "e"), "--backend", "vllm")
    assert out.returncode == 2 and "larft[vllm]" in out.stderr and "Traceback" not in out.stderr  # not installed here
    for option, value in (("--device", "tpu"), ("--dtype", "int3"), ("--backend", "llamacpp")):
        out = larft("eval", "--bench", "retention", "--out", str(tmp_path / "e"), option, value)
        assert out.returncode == 2 and option in out.stderr and value in out.stderr
        assert "Traceback" not in out.stderr


def test_report_marks_differences_within_the_intervals(tmp_path):
    from larft.eval.report import compare

    def run(name, ls, ci):
        d = tmp_path / name
        d.mkdir()
        metrics = {"LS": ls, "LD": 50.0, "n": 3, "ci95": {"LS": ci}, "refusals": {"n": 0, "rate": 0.0},
                   "per_control": {"equal": {"LS": ls, "LD": 50.0, "per_length": {"16": {"LS": ls, "LD": 50.0, "n": 3}}}}}
        samples = [{"id": "a", "control": "equal", "target": 16, "length": 20}]
        (d / "results.json").write_text(json.dumps({"model": name, "benchmarks": {"lifebench": {
            "metrics": metrics, "samples": samples}}}))
        return str(d)

    report = compare([run("base", 50.0, [45.0, 55.0]), run("close", 53.0, [48.0, 58.0]), run("far", 80.0, [75.0, 85.0])],
                     tmp_path / "cmp").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| lifebench LS |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "50.0 [45.0, 55.0]" and cells[2].endswith("~") and not cells[3].endswith("~")


def test_lm_eval_pass_through_runs_offline_on_a_local_task(tiny_model_dir, tmp_path, monkeypatch):
    """lm-evaluation-harness on a task defined over a local JSONL file (no Hub): its score is
    stored under `lm_eval` in results.json, computed on the eval's device and dtype."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    data = tmp_path / "mc.jsonl"
    data.write_text("\n".join(json.dumps({"question": q, "choices": c, "answer": 0}) for q, c in [
        ("The sky is", ["blue", "green"]), ("Two plus two is", ["four", "five"]), ("Ice is", ["cold", "hot"])]) + "\n")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "local_mc.yaml").write_text(
        "task: larft_local_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {data}\ntest_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n")
    run_eval(str(tiny_model_dir), ["retention"], str(tmp_path / "e"), EvalSettings(device="cpu"),
             lm_eval_tasks=["larft_local_mc"], lm_eval_include_path=str(tasks))
    saved = json.loads((tmp_path / "e" / "results.json").read_text())
    result = saved["lm_eval"]["results"]["larft_local_mc"]
    assert result["sample_len"] == 3 and 0.0 <= result["acc,none"] <= 1.0
    assert saved["device"] == "cpu" and saved["dtype"] == "float32"


def test_length_plots_label_the_asked_lengths_plainly():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from larft.eval.report import asked_length_axis

    fig, ax = plt.subplots()
    ax.plot([16, 32, 512], [1, 2, 3])
    asked_length_axis(ax, [512, 16, 32, 16])
    fig.canvas.draw()
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["16", "32", "512"]
    assert not any(t.get_text() for t in ax.get_xticklabels(minor=True))
    plt.close(fig)
