"""research/recipe_sweep.py: the LIFEBench-shaped validation it chooses recipes on."""

import json
import sys
from pathlib import Path

import pytest

from larft.eval import benchmarks as B
from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sweep():
    return load_script("research/recipe_sweep.py")


def test_the_validation_tasks_share_no_task_with_the_evaluation_set():
    """The sweep validates on LIFEBench's label and refactor files; the experiment evaluates on
    the lite file: choosing on the former must not look at the latter."""
    try:
        data = B.benchmark_data_dir() / "lifebench"
    except FileNotFoundError as e:
        pytest.skip(str(e))
    lite = {item.messages[-1]["content"] for item in B.lifebench_items(data / "data_lite.jsonl")}
    label = {item.messages[-1]["content"] for item in B.lifebench_items(data / "data_label.jsonl")}
    refactor = {item.messages[-1]["content"] for item in B.lifebench_refactor_items(data / "data_refactor.jsonl")}
    assert len(label) == 1800 and len(refactor) > 150  # (a few refactor prompts repeat upstream)
    assert not (lite & label) and not (lite & refactor)
    raw = lambda name: {json.loads(x)["raw_data"] for x in (data / name).read_text().splitlines() if x.strip()}  # noqa: E731
    assert not (raw("data_lite.jsonl") & (raw("data_label.jsonl") | raw("data_refactor.jsonl")))  # no shared source text


def test_lifebench_validation_scores_a_model_and_caches_it(sweep, tiny_model_dir, tmp_path, monkeypatch):
    data = tmp_path / "bench" / "lifebench"
    data.mkdir(parents=True)
    tasks = ["Write a label for this review: great tea.", "Write a label for this tweet: rain again."]
    data.joinpath("data_label.jsonl").write_text("\n".join(json.dumps({
        "id": i, "category": "label", "type": "test", "lang": "en", "raw_data": t,
        "task": f"{t} The answer must be {{word_count_type}} {{word_count}} words long."})
        for i, t in enumerate(tasks, 1)) + "\n")
    monkeypatch.setenv("LARFT_BENCHMARKS", str(tmp_path / "bench"))
    cfg = {"lifebench_validation": {"bench": ["lifebench-label"], "filter": "lang=en,max_length=16",
                                    "max_new_tokens_cap": 200, "batch_size": 6}}
    out = tmp_path / "val"
    scores = sweep.lifebench_validation(str(tiny_model_dir), cfg, out)
    label = scores["lifebench-label"]
    # 2 tasks x at_least at 16 words: its score-neutral budget (1.5x the target) fits the cap of 200 tokens,
    # equal's and at_most's (3x) do not (the tiny tokenizer spends ~4 tokens a word)
    assert label["n"] == 2
    assert set(label["ls_per_control"]) <= {"equal", "at_most", "at_least"}
    assert (out / "results.json").exists()
    (out / "results.json").write_text(json.dumps({"benchmarks": {"lifebench-label": {"metrics": {
        "LS": 12.5, "n": 4, "per_control": {}}}}}))
    assert sweep.lifebench_validation(str(tiny_model_dir), cfg, out)["lifebench-label"]["ls"] == 12.5  # cached, not rerun
    assert sweep.lifebench_validation(str(tiny_model_dir), {}, out) is None  # no section, no validation
    assert sweep.lifebench_validation(str(tiny_model_dir), cfg, tmp_path / "none", run=False) is None  # --report-only
    other = {"lifebench_validation": {**cfg["lifebench_validation"], "filter": "lang=en,max_length=32"}}
    assert sweep.lifebench_validation(str(tiny_model_dir), other, out, run=False) is None  # another spec: not reused


@pytest.mark.parametrize("config", sorted((ROOT / "research" / "configs").glob("sweep-*.yaml")), ids=lambda p: p.name)
def test_every_sweep_variant_is_valid_larft_train_options(sweep, config, tmp_path):
    import yaml

    from larft.cli import parse_train_args

    cfg = yaml.safe_load(config.read_text())
    for name in cfg["variants"]:
        settings = sweep.variant_settings(name, cfg, tmp_path)  # what run_variant hands to larft train
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(settings))
        _, args = parse_train_args(["--config", str(path)])
        assert args.max_steps == cfg["base"]["max_steps"]


def test_own_count_error_reads_first_and_last_steps_and_is_none_without_counting(sweep):
    metrics = [{"step": i, "awareness_count_error": e} for i, e in enumerate([1.0, 1.0, 0.8, 0.6, 0.5, 0.4, 0.3], 1)]
    got = sweep.own_count_error(metrics, k=2)
    assert got == {"first": 1.0, "last": pytest.approx(0.35), "steps": 7}
    assert sweep.own_count_error([{"step": 1, "awareness_count_error": None}, {"step": 2}]) is None  # GRPO only


def test_paired_validation_difference_pairs_prompts_and_waits_for_both(sweep):
    def summary(delivered):
        rows = [{"prompt": f"p{i}", "constraint": "equal", "target": 32, "delivered": d, "deviation": abs(d - 32) / 32}
                for i, d in enumerate(delivered)]
        return {"held_out_after": sweep.held_out_rows(rows)}

    variants = {"a": summary([32, 32, 16, 40]), "old": {"validation_after": {"ls": 30.0}}}
    assert sweep.paired_validation_difference(variants, "a", "b") is None  # b has not run
    assert sweep.paired_validation_difference(variants, "a", "old") is None  # recorded without its rows
    variants["b"] = summary([16, 32, 16, 40])  # a is better on p0 only
    d = sweep.paired_validation_difference(variants, "a", "b")
    assert d["n"] == 4 and d["against"] == "b"
    from larft.eval.metrics import lifebench_ls

    gap = lifebench_ls(32, 32, "equal") - lifebench_ls(16, 32, "equal")  # on p0; equal elsewhere
    assert gap > 0 and abs(d["diff"] - gap / 4) < 1e-9
    assert d["ci"][0] >= 0.0 and d["ci"][1] <= gap


def test_a_variant_is_paired_with_its_own_pair_with_else_the_sweep_reference(sweep):
    def summary(delivered):
        rows = [{"prompt": f"p{i}", "constraint": "equal", "target": 32, "delivered": d, "deviation": abs(d - 32) / 32}
                for i, d in enumerate(delivered)]
        return {"held_out_after": sweep.held_out_rows(rows)}

    variants = {"g": summary([32, 32]), "l": summary([16, 32]), "g2": summary([16, 16]), "l2": summary([32, 16])}
    cfg = {"reference": "g", "variants": {"g": {}, "l": {}, "g2": {}, "l2": {"pair_with": "g2"}}}
    sweep.pair_with_references(variants, cfg)
    assert "validation_ls_minus_reference" not in variants["g"]
    assert variants["l"]["validation_ls_minus_reference"]["against"] == "g"
    assert variants["g2"]["validation_ls_minus_reference"]["against"] == "g"
    assert variants["l2"]["validation_ls_minus_reference"]["against"] == "g2"
    assert variants["l2"]["validation_ls_minus_reference"]["diff"] > 0  # better than g2 on p0, equal on p1


def test_held_out_only_summarizes_a_finished_variant_and_starts_no_validation(sweep, tmp_path, monkeypatch):
    """--held-out-only: the held-out check counts, the ~35-min LIFEBench-shaped validation is left
    for later (nothing is run for a finished variant, nor for the base model)."""
    work = tmp_path / "work"
    rows = [{"prompt": f"p{i}", "constraint": "equal", "target": t, "delivered": d, "deviation": abs(d - t) / t}
            for i, (t, d) in enumerate([(16, 20), (32, 30), (64, 40)])]
    (work / "lam-0").mkdir(parents=True)
    (work / "lam-0" / "length_check.json").write_text(json.dumps({"before": rows, "after": rows[::-1]}))
    (work / "lam-0" / "metrics.jsonl").write_text(json.dumps({"step": 1, "kl": 0.01, "step_seconds": 60.0}) + "\n")
    (work / "lam-0" / "rollouts.jsonl").write_text(json.dumps({
        "step": 1, "text": "one two three", "length": 3, "target": 32, "constraint": "equal",
        "reward/length_reward": 0.09}) + "\n")
    config = tmp_path / "sweep.yaml"
    config.write_text(json.dumps({"results": "held", "work_dir": str(work), "base": {"model": "default"},
                                  "lifebench_validation": {"bench": ["lifebench-label"]},
                                  "variants": {"lam-0": {"awareness_lambda_max": 0.0}}}))
    (tmp_path / "research" / "img").mkdir(parents=True)
    monkeypatch.setattr(sweep, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(sweep, "ROOT", tmp_path)

    def no_subprocess(*a, **k):
        raise AssertionError(f"nothing should run: {a}")

    monkeypatch.setattr(sweep.subprocess, "run", no_subprocess)
    monkeypatch.setattr(sys, "argv", ["recipe_sweep.py", "--config", str(config), "--held-out-only"])
    sweep.main()
    out = json.loads((tmp_path / "results" / "held.json").read_text())
    variant = out["variants"]["lam-0"]
    assert variant["lifebench_shaped_validation"] is None and out["lifebench_shaped_validation_base"] is None
    assert variant["steps"] == 1 and variant["validation_after"]["words_mean"] == 30
    assert (tmp_path / "research" / "img" / "held_reward.png").exists()
    assert [r["delivered"] for r in variant["held_out_after"]] == [40, 30, 20]  # kept for pairing

    # a variant recorded before the rows were kept, its run folder gone: its paired figure survives a report
    old = {k: v for k, v in variant.items() if k != "held_out_after"}
    old["validation_ls_minus_reference"] = {"against": "lam-0", "diff": -9.3, "ci": [-18.0, -0.8], "n": 48}
    out["variants"]["old"] = old
    (tmp_path / "results" / "held.json").write_text(json.dumps(out))
    config.write_text(json.dumps({**json.loads(config.read_text()), "reference": "lam-0"}))
    monkeypatch.setattr(sys, "argv", ["recipe_sweep.py", "--config", str(config), "--report-only"])
    sweep.main()
    again = json.loads((tmp_path / "results" / "held.json").read_text())["variants"]
    assert again["old"]["validation_ls_minus_reference"]["diff"] == -9.3


def test_a_checkpointed_variant_resumes_and_a_short_one_starts_over(sweep, tmp_path, monkeypatch):
    """Long variants (a larger model, ~1.5 h) set save_steps and resume where they stopped;
    short ones keep no checkpoint and an interrupted one starts over. A relative work_dir lives
    under $LARFT_HOME, so a resumed session finds it."""
    import yaml

    monkeypatch.setenv("LARFT_HOME", str(tmp_path / "home"))
    cfg = {"work_dir": "sweep-x", "base": {"model": "default", "max_steps": 20},
           "variants": {"long": {"save_steps": 5}, "short": {}}}
    work = sweep.sweep_dir(cfg)
    assert work == tmp_path / "home" / "sweep-x"
    for name in ("long", "short"):
        (work / name / "checkpoint-5").mkdir(parents=True)
        (work / name / "checkpoint-5" / "trainer_state.json").write_text("{}")
        (work / name / "metrics.jsonl").write_text("{}\n")
    (work / "short" / "checkpoint-5" / "trainer_state.json").unlink()  # died before a complete checkpoint
    calls = []

    def fake_train(argv, **kwargs):
        calls.append(argv)
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(sweep.subprocess, "run", fake_train)
    fresh = []
    monkeypatch.setattr(sweep, "reuse_before", lambda settings, cfg, work, out: fresh.append(out.name))
    (work / "long.wall.json").write_text(json.dumps({"wall_minutes": 30.0}))  # the first session's call
    (work / "short.wall.json").write_text(json.dumps({"wall_minutes": 99.0}))  # an earlier, discarded run
    sweep.run_variant("long", cfg, work)
    assert calls[-1][-2:] == ["--resume", "true"]
    assert fresh == []  # a resumed run keeps its own "before"
    assert 30.0 <= json.loads((work / "long.wall.json").read_text())["wall_minutes"] < 31.0  # summed over calls
    assert (work / "long" / "metrics.jsonl").exists()  # the run so far is kept
    assert not list((work / "long").glob("checkpoint-*"))  # optimizer states dropped once finished
    assert yaml.safe_load((work / "long.yaml").read_text())["save_steps"] == 5
    sweep.run_variant("short", cfg, work)
    assert "--resume" not in calls[-1]
    assert fresh == ["short"]
    assert not (work / "short").exists()  # wiped: it starts over
    assert json.loads((work / "short.wall.json").read_text())["wall_minutes"] < 1.0  # the discarded run's not added
    assert yaml.safe_load((work / "short.yaml").read_text())["save_steps"] == 10**6


def test_a_pair_with_that_names_no_variant_is_a_clear_error(sweep, tmp_path, monkeypatch):
    config = tmp_path / "sweep.yaml"
    config.write_text(json.dumps({"base": {"model": "default"},
                                  "variants": {"g": {}, "l": {"pair_with": "gg"}}}))
    monkeypatch.setattr(sys, "argv", ["recipe_sweep.py", "--config", str(config), "--report-only"])
    with pytest.raises(SystemExit, match=r"variants\.l\.pair_with: 'gg' is not a variant"):
        sweep.main()
