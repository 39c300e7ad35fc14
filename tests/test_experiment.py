"""benchmarks/experiment.py: its stages, the runs' training options and the results page,
checked without running anything (the experiment itself takes hours)."""

import json
from pathlib import Path

import pytest
import yaml
from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def experiment():
    return load_script("benchmarks/experiment.py")


@pytest.fixture(scope="module")
def cfg():
    return yaml.safe_load((ROOT / "configs" / "experiment-cpu.yaml").read_text())


def test_stages_include_best_of_8_and_one_seed_of_each_baseline(experiment, cfg):
    stages = experiment.all_stages(cfg)
    assert stages[:2] == ["base", "best_of_8"]
    assert {"grpo-0", "grpo-1", "larft-0", "larft-1", "rft-0", "dpo-0"} <= set(stages)
    assert "rft-1" not in stages and "dpo-1" not in stages  # the first seed only
    assert experiment.inference_args(cfg, "best_of_8") == ["--best-of", "8", "--seed", str(cfg["seeds"][0]),
                                                           "--temperature", "0.7", "--top_p", "0.8",
                                                           "--backend", "ct2"]


def test_every_run_is_valid_larft_train_options(experiment, cfg, tmp_path):
    from larft.cli import parse_train_args

    for name in cfg["runs"]:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**experiment.run_settings(cfg, name), "output_dir": str(tmp_path / name)}))
        train_args, config = parse_train_args(["--config", str(path)])
        assert train_args.method == cfg["runs"][name].get("method", "larft")
    assert "n_seeds" not in experiment.run_settings(cfg, "rft")  # the experiment's key, not a train option


def _run(ls, tokens, ci=None, seeds=None):
    run = {"lifebench_ls": ls, "gen_tokens_per_prompt": tokens, "lifebench_ls_ci": ci, "best_of": 8 if ci else 1}
    if seeds:
        run["seeds"] = seeds
    return run


def test_the_best_of_8_line_is_computed_from_the_numbers(experiment):
    assert "**pending** (no best_of_8 results yet)" in experiment.best_of_answer({"larft": _run(50, 60)})
    best = _run(48.0, 480.0, ci=[45.0, 51.0])
    line = experiment.best_of_answer({"larft": _run(55.0, 60.0), "best_of_8": best})
    assert "**yes**" in line and "+7.0" in line and "0.12 of its inference cost (1/8.0)" in line
    assert "**not clearly**" in experiment.best_of_answer({"larft": _run(50.0, 60.0), "best_of_8": best})
    assert "**no**" in experiment.best_of_answer({"larft": _run(40.0, 60.0), "best_of_8": best})


def test_gen_tokens_per_prompt_is_read_or_recomputed_for_older_results(experiment):
    assert experiment.gen_tokens_per_prompt({"metrics": {"gen_tokens_per_prompt": 12.5}}) == 12.5
    older = {"metrics": {}, "samples": [{"new_tokens": 10}, {"new_tokens": 30}]}
    assert experiment.gen_tokens_per_prompt(older) == 20


def _results(ls: float) -> dict:
    """An eval results.json as `larft eval` writes it, reduced to what the headline reads."""
    life = {"LS": ls, "LD": 0.5, "n": 3, "ci95": {"LS": [ls - 3, ls + 3], "LS equal": [ls - 5, ls + 5]},
            "per_control": {c: {"LS": ls, "per_length": {"16": {"LS": ls}, "32": {"LS": ls}}} for c in ("equal", "at_most", "at_least")},
            "refusals": {"rate": 0.0, "per_control": {"equal": {"rate": 0.0}}}, "gen_tokens_per_prompt": 40.0}
    samples = [{"id": f"q{t}", "control": "equal", "target": t, "length": t + 3, "new_tokens": 40, "gen_tokens": 40}
               for t in (16, 32, 64)]
    return {"model": "default", "benchmarks": {
        "lifebench": {"metrics": life, "samples": samples},
        "counting": {"metrics": {"within10_rate": 0.25, "mae_parsed": 12.0, "format_rate": 1.0, "ci95": {}},
                     "samples": []},
        "retention": {"metrics": {"perplexity": 20.0}, "samples": []}}}


def _finished_stage(work, tag: str, ls: float, trained: bool) -> None:
    import json

    for group, benches in (("lifebench", ["lifebench"]), ("probe", ["counting", "retention"])):
        out = work / "eval" / tag / group
        out.mkdir(parents=True)
        full = _results(ls)
        (out / "results.json").write_text(json.dumps({"model": full["model"],
                                                      "benchmarks": {b: full["benchmarks"][b] for b in benches}}))
    if trained:
        run = work / "train" / tag
        run.mkdir(parents=True)
        (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward_mean": 0.5}) + "\n")
        row = {"step": 1, "prompt": "Describe tides in about 16 words.", "text": "Tides rise.", "target": 16,
               "constraint": "equal", "unit": "words", "length": 2, "truncated": False, "reward/length": 0.125}
        (run / "rollouts.jsonl").write_text(json.dumps(row) + "\n")


def test_finished_stages_are_recorded_in_the_checkout_and_never_run_again(experiment, cfg, tmp_path, monkeypatch):
    """A fresh machine has no work_dir: what finished must come back from the committed records."""
    import json

    monkeypatch.setattr(experiment, "RECORDS", tmp_path / "records")
    monkeypatch.setattr(experiment, "RESULTS", tmp_path / "experiment.json")
    monkeypatch.setattr(experiment, "DOCS", tmp_path / "docs")
    work = tmp_path / "work"
    _finished_stage(work, "base", 50.0, trained=False)
    _finished_stage(work, "larft-0", 60.0, trained=True)
    assert experiment.recorded(cfg, "base") is None
    experiment.record_stage(cfg, work, "base", "default")
    experiment.record_stage(cfg, work, "larft-0", "/models/larft-0", {"train_minutes": 40.0, "steps": 40})

    import shutil
    shutil.rmtree(work)  # the machine is gone; the records are what a later session has
    rec = tmp_path / "records" / cfg["name"]
    assert experiment.recorded(cfg, "base")["lifebench_ls"] == 50.0
    assert experiment.recorded(cfg, "larft-0")["train_minutes"] == 40.0
    trace = json.loads((rec / "larft-0" / "rollouts.jsonl").read_text())
    assert trace == {"step": 1, "target": 16, "constraint": "equal", "unit": "words", "length": 2,
                     "truncated": False, "loops": None, "ends_on_sentence": True,
                     "reward/length": 0.125}  # no prompt or answer texts: their health flags instead

    experiment.write_outputs(cfg, experiment.all_stages(cfg), "configs/experiment-cpu.yaml")
    result = json.loads((tmp_path / "experiment.json").read_text())
    assert set(result["runs"]) == {"base", "larft"}
    assert result["runs"]["larft"]["seeds"]["0"]["lifebench_ls"] == 60.0
    assert "base" not in result["pending"] and "larft-0" not in result["pending"] and "grpo-0" in result["pending"]
    assert (tmp_path / "docs" / "img" / "lifebench" / "ls_by_length.png").exists()  # plots from the records
    page = (tmp_path / "docs" / "results.md").read_text()
    assert "**60.0**" in page
    commit = experiment.git_commit()[:10]
    assert f"Stages, each at the commit it was recorded at: base `{commit}`, larft-0 `{commit}`." in page
    assert "(../research/notes.md)" in page and "Where this stands" not in page  # this experiment only

    experiment.check_record(cfg, "larft-0", experiment.recorded(cfg, "larft-0"))  # same settings: fine
    changed = {**cfg, "runs": {**cfg["runs"], "larft": {"awareness_lambda_max": 1.0}}}
    with pytest.raises(SystemExit, match="larft-0 was recorded with other settings \\(train differ"):
        experiment.check_record(changed, "larft-0", experiment.recorded(cfg, "larft-0"))


def test_larft_minus_grpo_is_paired_over_the_prompts_both_answered(experiment, cfg, tmp_path, monkeypatch):
    """Same prompts, two models: the difference's interval resamples prompts in pairs."""
    import json

    from larft.eval.metrics import lifebench_aggregate

    monkeypatch.setattr(experiment, "RECORDS", tmp_path / "records")
    rng = __import__("random").Random(0)
    prompts = [(f"p{i}-{c}-{t}", c, t) for i in range(6) for c in ("equal", "at_most", "at_least") for t in (16, 64)]
    for tag, stretch in (("larft-1", 1.0), ("grpo-1", 1.6)):  # grpo's answers 60% longer: worse on equal / at_most
        rec = tmp_path / "records" / cfg["name"] / tag / "lifebench"
        rec.mkdir(parents=True)
        samples = [{"id": i, "control": c, "target": t, "length": max(2, round(t * stretch * rng.uniform(0.8, 1.2)))}
                   for i, c, t in prompts]
        (rec / "results.json").write_text(json.dumps({"benchmarks": {"lifebench": {"samples": samples}}}))
    got = experiment.paired_ls_difference(cfg, "larft-1", "grpo-1")
    ls = {tag: lifebench_aggregate(
        (x["control"], x["target"], x["length"]) for x in json.loads(
            (tmp_path / "records" / cfg["name"] / tag / "lifebench" / "results.json").read_text())
        ["benchmarks"]["lifebench"]["samples"])["LS"] for tag in ("larft-1", "grpo-1")}
    assert got["n"] == len(prompts)
    assert got["diff"] == pytest.approx(ls["larft-1"] - ls["grpo-1"]) and got["diff"] > 0
    assert got["ci"][0] < got["diff"] < got["ci"][1]
    assert experiment.paired_ls_difference(cfg, "larft-0", "grpo-1") is None  # no per-prompt samples recorded


def test_every_awareness_variant_is_compared_with_grpo_only(experiment):
    """`larft` and any variant with the awareness loss get `ls_minus_grpo`; GRPO-only, the baselines
    (method rft / dpo) and a lambda-0 run do not, and nothing does without GRPO-only's figures."""
    cfg = {"runs": {"grpo": {"awareness_lambda_max": 0.0}, "larft": {}, "larft_number": {"awareness_loss_on": "number"},
                    "rft": {"method": "rft"}, "also_grpo": {"awareness_lambda_max": 0.0}}}
    runs = {name: {} for name in cfg["runs"]}
    assert experiment.awareness_runs(cfg, runs) == ["larft", "larft_number"]
    assert experiment.awareness_runs(cfg, {"larft": {}, "larft_number": {}}) == []
    assert experiment._overrides(cfg, "larft_number") == "awareness_loss_on: number"


def test_perception_vs_control_averages_seeds_and_needs_an_awareness_run(experiment, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    grpo = {f"grpo-{s}": [{"step": k, "length_error_mean": 0.5 + s * 0.1} for k in (1, 2)] for s in (0, 1)}
    path = tmp_path / "p.png"
    assert experiment.perception_vs_control(grpo, path) is False and not path.exists()  # nothing to compare
    larft = {f"larft_number-{s}": [{"step": k, "length_error_mean": 0.4, "awareness_count_error": 1.0 - k * 0.2 - s * 0.2}
                                   for k in (1, 2)] for s in (0, 1)}
    means = experiment._mean_over_seeds({**grpo, **larft}, "awareness_count_error")
    assert list(means) == ["larft_number"]  # GRPO-only runs log no counting
    steps, values = zip(*means["larft_number"])
    assert steps == (1, 2) and values == pytest.approx([0.7, 0.5])
    assert [v for _, v in experiment._mean_over_seeds(grpo, "length_error_mean")["grpo"]] == pytest.approx([0.55, 0.55])
    assert experiment._rolling([1.0, 3.0, 5.0], k=2) == [1.0, 2.0, 4.0]
    assert experiment.perception_vs_control({**grpo, **larft}, path) is True and path.stat().st_size > 0


def test_the_goals_table_marks_each_goal_from_the_numbers(experiment):
    def seed(ls, equal, within, mae, ppl, minutes, refusals=0.0):
        return {"lifebench_ls": ls, "lifebench_ls_ci": [ls - 3, ls + 3], "lifebench_ls_equal": equal,
                "lifebench_ls_equal_ci": None, "counting_within10": within, "counting_within10_ci": None,
                "counting_mae_parsed": mae, "counting_mae_parsed_ci": None, "perplexity": ppl,
                "train_minutes": minutes, "refusal_rate": refusals,
                "refusal_rate_per_control": {"equal": refusals, "at_most": 0.0, "at_least": 0.0}}

    base = {"lifebench_ls": 50.0, "lifebench_ls_ci": [47.0, 53.0], "perplexity": 20.0}
    good = {"seeds": {0: seed(80, 60, 0.6, 8, 20.5, 40), 1: seed(78, 52, 0.5, 10, 20.9, 44)}}
    good.update(lifebench_ls=79.0, lifebench_ls_equal=56.0, counting_within10=0.55, counting_mae_parsed=9.0,
                ls_minus_grpo=6.0, ls_minus_grpo_per_seed={0: 7.0, 1: 5.0},
                ls_minus_grpo_paired={1: {"ci": [1.0, 9.0], "n": 300}})
    rows = [r for r in experiment.goals_table({"base": base, "grpo": {}, "larft": good}) if r.startswith("| ")][1:]
    assert len(rows) == 7 and all(r.endswith("**met** |") for r in rows), rows
    assert "+29.0" in rows[0] and "s1: 78.0 [75.0, 81.0]" in rows[0] and "s1: +5.0 [1.0, 9.0] paired" in rows[1]
    # one seed over each limit is enough to miss: 4.5% more perplexity is fine, 5.5% is not; 46 minutes
    # is over 45; a refusal rate of 3% in one control is over 2%
    bad = {**good, "lifebench_ls": 74.0, "ls_minus_grpo": -1.0,
           "seeds": {0: seed(74, 60, 0.6, 8, 21.1, 46, refusals=0.03), 1: good["seeds"][1]}}
    rows = [r for r in experiment.goals_table({"base": base, "grpo": {}, "larft": bad}) if r.startswith("| ")][1:]
    assert [r.rsplit("|", 2)[1].strip().split(" ")[0] for r in rows] == \
        ["missed", "missed", "**met**", "**met**", "missed", "missed", "missed"]
    assert "negative result" in rows[1]
    assert experiment.goals_table({"base": base, "larft": good}) == []  # no GRPO-only yet: no table


def test_the_experiment_table_reads_health_from_the_stored_samples(experiment, tmp_path):
    path = tmp_path / "results.json"
    samples = [{"target": 16, "truncated": False, "ends_on_sentence": True, "loops": False},
               {"target": 32, "truncated": True, "ends_on_sentence": False, "loops": True}]
    path.write_text(json.dumps({"benchmarks": {"lifebench": {"metrics": {}, "samples": samples}}}))
    assert experiment.answer_health_figures(path) == {"lifebench_ends_on_sentence": 0.5, "lifebench_loops": 0.5,
                                                      "lifebench_cut_at_budget": 0.5}
    samples = [{"target": 16, "truncated": True}, {"target": 16, "truncated": False}]  # an older record
    path.write_text(json.dumps({"benchmarks": {"lifebench": {"metrics": {}, "samples": samples}}}))
    assert experiment.answer_health_figures(path) == {"lifebench_ends_on_sentence": None, "lifebench_loops": None,
                                                      "lifebench_cut_at_budget": 0.5}
    assert experiment.answer_health_figures(tmp_path / "missing.json") == {}


def test_the_results_page_words_the_health_a_run_has():
    page = load_script("benchmarks/results_page.py")
    assert page.health_text({"lifebench_ends_on_sentence": 0.932, "lifebench_loops": 0.01,
                             "lifebench_cut_at_budget": None}) == ", answers ending on a sentence 93.2%, looping 1.0%"
    assert page.health_text({}) == ""


def test_ls_and_loops_by_asked_length_per_run_and_mean_of_seeds(experiment, tmp_path):
    path = tmp_path / "results.json"
    samples = [{"target": 16, "truncated": False, "ends_on_sentence": True, "loops": False},
               {"target": 512, "truncated": True, "ends_on_sentence": False, "loops": True},
               {"target": 512, "truncated": False, "ends_on_sentence": True, "loops": False}]
    metrics = {"per_control": {"equal": {"per_length": {"16": {"LS": 80.0}, "512": {"LS": 20.0}}},
                               "at_most": {"per_length": {"16": {"LS": 60.0}, "512": {"LS": 40.0}}}}}
    path.write_text(json.dumps({"benchmarks": {"lifebench": {"metrics": metrics, "samples": samples}}}))
    cells = experiment.by_length_figures(path)["lifebench_by_length"]
    assert cells["16"] == {"LS": 70.0, "lifebench_ends_on_sentence": 1.0, "lifebench_loops": 0.0,
                           "lifebench_cut_at_budget": 0.0}
    assert cells["512"]["LS"] == 30.0 and cells["512"]["lifebench_loops"] == 0.5
    other = {"16": {**cells["16"], "LS": 50.0}, "512": {**cells["512"], "lifebench_loops": 1.0}}
    seeds = {0: {"lifebench_ls_per_control": {}, "lifebench_by_length": cells},
             1: {"lifebench_ls_per_control": {}, "lifebench_by_length": other}}
    mean = experiment.seed_mean(seeds)["lifebench_by_length"]
    assert mean["16"]["LS"] == 60.0 and mean["512"]["lifebench_loops"] == 0.75
    table = "\n".join(experiment.by_length_table({"base": {"lifebench_by_length": cells}, "larft": {"lifebench_by_length": mean}}))
    assert "| run | 16 | 512 |" in table
    assert "| base | 70.0 (0 / 0) | 30.0 (50 / 50) |" in table and "| larft | 60.0 (0 / 0) | 30.0 (75 / 50) |" in table


def test_a_draft_experiment_writes_its_page_beside_its_records(experiment, cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(experiment, "RECORDS", tmp_path / "records")
    monkeypatch.setattr(experiment, "DOCS", tmp_path / "docs")
    figures, page = experiment.output_paths({**cfg, "draft": True})
    assert figures == tmp_path / "records" / cfg["name"] / "experiment.json"
    assert page == tmp_path / "records" / cfg["name"] / "results.md"
    assert experiment.output_paths(cfg)[1] == tmp_path / "docs" / "results.md"


def test_inference_stages_of_trained_models_come_after_their_runs_and_carry_their_settings(experiment, cfg):
    cfg = {**cfg, "inference": {**cfg["inference"], "best_of_4_larft": {"of": "larft-0", "best_of": 4, "limit": 90}}}
    stages = experiment.all_stages(cfg)
    assert stages.index("best_of_4_larft") > stages.index("larft-0") and stages.index("best_of_8") < stages.index("larft-0")
    args = experiment.inference_args(cfg, "best_of_4_larft")
    assert args[:2] == ["--best-of", "4"] and args[-2:] == ["--limit", "90"]
    settings = experiment.stage_settings(cfg, "best_of_4_larft")
    assert settings["of"] == "larft-0" and settings["train"] == experiment.run_settings(cfg, "larft")
    assert "train" not in experiment.stage_settings(cfg, "best_of_8")
    with pytest.raises(SystemExit, match="not a trained stage"):
        experiment.inference_model({**cfg, "inference": {"x": {"of": "larft-7"}}}, "x", Path("/nowhere"), Path("/nowhere"))


def test_the_long_lengths_goals_are_marked_from_the_numbers(experiment):
    def cells(ls256, ls512, loops):
        return {"16": {"LS": 60.0, "lifebench_loops": 0.0}, "256": {"LS": ls256, "lifebench_loops": loops},
                "512": {"LS": ls512, "lifebench_loops": 0.02}}
    runs = {"base": {"lifebench_ls": 40.0, "lifebench_by_length": cells(20.0, 10.0, 0.4)},
            "larft": {"lifebench_ls": 56.0, "seeds": {0: {"lifebench_ls": 56.0, "lifebench_ls_ci": [50, 60]}},
                      "lifebench_by_length": cells(36.0, 20.0, 0.03)},
            "best_of_8": {"lifebench_ls": 70.0, "gen_tokens_per_prompt": 1000.0},
            "best_of_4_larft": {"lifebench_ls": 71.0, "gen_tokens_per_prompt": 400.0}}
    table = "\n".join(experiment.long_lengths_goals(runs))
    assert "| LS, LIFEBench-lite EN 16..512, LARFT (mean of seeds) | >= base + 15 |" in table
    assert "56.0 (s0: 56.0 [50.0, 60.0]); base 40.0: +16.0 | **met** |" in table
    assert "| LS at 256 words, LARFT | >= base + 15 | 36.0; base 20.0: +16.0 | **met** |" in table
    assert "| LS at 512 words, LARFT | >= base + 15 | 20.0; base 10.0: +10.0 | missed |" in table
    assert "3.0% at 256 words | **met** |" in table
    assert "71.0 vs 70.0, at 0.40 of its tokens | **met** |" in table
    assert experiment.long_lengths_goals({"base": runs["base"]}) == []


def test_the_16_to_512_experiment_runs_the_recipe_and_its_eval_caps_are_score_neutral(experiment, tmp_path):
    from larft.budget import answer_budget
    from larft.cli import parse_train_args

    v5 = yaml.safe_load((ROOT / "configs" / "experiment-cpu-v5.yaml").read_text())
    assert v5["draft"] is True and v5["train_data"]["targets"][-1] == 512
    for name in v5["runs"]:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**experiment.run_settings(v5, name), "output_dir": str(tmp_path / name)}))
        parse_train_args(["--config", str(path)])
    assert experiment.run_settings(v5, "larft")["max_completion_length"] >= 1423  # 2x 512 words, SmolLM2's tokens
    stages = experiment.all_stages(v5)
    assert stages[:2] == ["base", "best_of_8"] and stages[-2:] == ["best_of_4_larft", "best_of_4_grpo"]
    limits = {n: experiment.inference_args(v5, n)[-1] for n in v5["inference"]}
    assert len(set(limits.values())) == 1  # every best-of-N stage on the same sample of prompts
    from larft.models import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(resolve_model("default"))
    assert v5["eval"]["max_new_tokens_cap"] >= answer_budget(512, tokenizer, "equal")  # no cap decides a score


def test_best_of_n_on_a_sample_is_compared_on_that_sample(experiment, cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(experiment, "RECORDS", tmp_path)
    rec = tmp_path / cfg["name"]

    def stage(tag, answers):  # answers: id -> delivered length (equal-to 16 words)
        (rec / tag / "lifebench").mkdir(parents=True)
        samples = [{"id": i, "control": "equal", "target": 16, "length": n, "new_tokens": n} for i, n in answers.items()]
        (rec / tag / "lifebench" / "results.json").write_text(json.dumps({"benchmarks": {"lifebench": {"samples": samples}}}))

    stage("best_of_8", {"a": 16, "b": 16})
    stage("larft-0", {"a": 16, "b": 16, "c": 64, "d": 64})  # perfect on best-of-8's two prompts, far off elsewhere
    runs = {"best_of_8": {"lifebench_ls": 100.0, "lifebench_n": 2, "best_of": 8, "gen_tokens_per_prompt": 128.0},
            "larft": {"lifebench_ls": 50.0, "lifebench_n": 4, "gen_tokens_per_prompt": 40.0, "seeds": {0: {}}}}
    assert "**not comparable here**" in experiment.best_of_answer(runs)
    experiment.on_sample({**cfg, "inference": {"best_of_8": {"limit": 2}}}, runs, "best_of_8")
    assert runs["larft"]["on_sample"]["best_of_8"] == {"lifebench_ls": 100.0, "gen_tokens_per_prompt": 16.0,
                                                        "lifebench_n": 2}
    line = experiment.best_of_answer(runs)
    assert "LIFEBench LS 100.0 (LARFT, mean of seeds) vs 100.0" in line and "(both on best-of-8's 2 prompts)" in line


def test_the_mean_of_seeds_keeps_their_prompt_count(experiment):
    seed = {"lifebench_ls_per_control": {"equal": 50.0}, "lifebench_n": 324}
    assert experiment.seed_mean({0: seed, 1: seed})["lifebench_n"] == 324
    assert "lifebench_n" not in experiment.seed_mean({0: seed, 1: {**seed, "lifebench_n": 90}})
