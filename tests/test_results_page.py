"""benchmarks/results_page.py: the results page's sections after the experiment (learning per CPU-hour,
the long run), written from their results files alone."""

import json

import pytest
from helpers import load_script


@pytest.fixture(scope="module")
def page():
    return load_script("benchmarks/results_page.py")


def test_results_page_shows_the_long_runs_last_points(page, tmp_path):
    assert page.long_run_lines(tmp_path / "absent.json") == []
    point = {"train_minutes": 0.0, "lifebench_ls": 50.0, "lifebench_ls_ci": [45.0, 55.0], "lifebench_n": 90}
    result = {"steps": 300, "eval_every": 50, "curve_prompts": 96, "seed": 0, "recipe": "configs/recipe-cpu.yaml",
              "command": "python benchmarks/long_run.py", "best_of_8_ls": 82.8,
              "runs": {"larft": {"curve": [{**point, "steps": 0},
                                           {**point, "steps": 100, "lifebench_ls": 65.8, "train_minutes": 95.8}]},
                       "grpo": {"curve": [{**point, "steps": 0}]}}}
    path = tmp_path / "long_run.json"
    path.write_text(json.dumps(result))
    text = "\n".join(page.long_run_lines(path))
    assert "## The long run (in progress" in text and "Base 50.0 [45.0, 55.0]" in text
    assert "LARFT at step 100: **65.8** [45.0, 55.0] (96 training minutes)" in text
    assert "GRPO-only at step 0" in text and "best-of-8 from the base model 82.8" in text
    for run in result["runs"].values():
        run["curve"][-1]["steps"] = 300
    path.write_text(json.dumps(result))
    assert "## The long run\n" in "\n".join(page.long_run_lines(path)) + "\n"
    assert "paired" not in "\n".join(page.long_run_lines(path))  # no comparison recorded, none shown
    result["larft_minus_grpo"] = {"curve": [{"steps": 50, "diff": 2.5, "ci": [-1.0, 6.0], "n": 90}],
                                  "final": {"diff": -0.4, "ci": [-3.0, 2.2], "n": 324}}
    path.write_text(json.dumps(result))
    assert ("LARFT minus GRPO-only, paired over the same prompts: step 50 +2.5 [-1.0, 6.0]; "
            "final models (all 324 prompts) -0.4 [-3.0, 2.2].") in "\n".join(page.long_run_lines(path))
    result["runs"]["larft"]["final"] = {"lifebench_ls": 69.4, "lifebench_ls_ci": [66.7, 72.1], "lifebench_ls_equal": 39.3,
                                        "perplexity": 22.03, "refusal_rate": 0.0, "lifebench_n": 324}
    path.write_text(json.dumps(result))
    assert ("The final models (step 300) on all 324 prompts: LARFT **69.4** [66.7, 72.1] (equal-to 39.3, "
            "perplexity 22.03, refusals 0.0%).") in "\n".join(page.long_run_lines(path))
    assert "Checkpoints at steps" not in "\n".join(page.long_run_lines(path))
    for name, ls in (("larft", 70.1), ("grpo", 71.0)):
        result["runs"][name]["full_at"] = [{"steps": 250, "lifebench_ls": ls, "lifebench_ls_ci": [60.0, 80.0]}]
    result["larft_minus_grpo"]["full_at"] = [{"steps": 250, "diff": -0.9, "ci": [-3.5, 1.7], "n": 324}]
    result["full_at_command"] = "python benchmarks/long_run.py --full_at 250"
    path.write_text(json.dumps(result))
    assert ("Checkpoints at steps 250 on all the final models' prompts (`python benchmarks/long_run.py --full_at 250`): "
            "LARFT 70.1; GRPO-only 71.0; LARFT minus GRPO-only, paired: step 250 -0.9 [-3.5, 1.7].") \
        in "\n".join(page.long_run_lines(path))


SPEED = {"command_steps": "python benchmarks/learning_speed.py --part steps",
         "step_setup": {"rollouts": 16, "prompts": 4, "group": 4, "micro_batch": 8, "max_completion_length": 192,
                        "threads": 2},
         "step_seconds_median": {"grpo-today": 90.0, "larft-today": 108.0, "grpo-fast-ct2": 45.0, "larft-fast-ct2": 60.0},
         "larft_over_grpo_ratio": 60.0 / 45.0, "larft_over_grpo_ratio_today": 1.2,
         "steps_per_hour": {"today": 3600 / 108.0, "fast": 60.0}}


def test_learning_speed_shows_step_costs_then_held_out_ls_per_seed(page, tmp_path):
    path = tmp_path / "learning_speed.json"
    assert page.learning_speed_lines(path) == []
    path.write_text(json.dumps(SPEED))
    text = "\n".join(page.learning_speed_lines(path))
    assert "| 90.0 | 108.0 | 1.00 / 1.00 |" in text  # today against itself
    assert "**the recipe** | 45.0 | 60.0 | 2.00 / 1.80 |" in text
    assert "`beta0`" not in text  # a variant not measured gets no row
    assert "LARFT / GRPO-only step time: 1.33 with the recipe, 1.20 before it" in text
    assert "LARFT steps per hour: today 33, the recipe 60" in text
    assert "(`--part minutes`): not run yet" in text

    minutes = {"command_minutes": "python benchmarks/learning_speed.py --part minutes", "heldout_ls_before": 50.0,
               "heldout_ls_at_minutes": {"today": {"15": {"per_seed": {"0": 52.0}, "mean": 52.0},
                                                   "30": {"per_seed": {"0": 55.0}, "mean": 55.0}},
                                         "fast": {"15": {"per_seed": {"0": 58.0, "1": 60.0}, "mean": 59.0}}},
               "minute_runs": {"fast-0": {"marks": [{"minutes": 15.0, "steps": 14, "ls": 58.0}]}}}
    path.write_text(json.dumps({**SPEED, **minutes}))
    text = "\n".join(page.learning_speed_lines(path))
    assert "not run yet" not in text and "50.0 before training" in text
    assert "| `today`: recipe before the levers | **52.0** (s0: 52.0) | **55.0** (s0: 55.0) |" in text
    assert "| `fast`: the recipe | **59.0** (s0: 58.0 at step 14; s1: 60.0) | - |" in text


def test_the_sections_are_rewritten_alone(page, tmp_path):
    point = {"train_minutes": 0.0, "lifebench_ls": 50.0, "lifebench_ls_ci": [45.0, 55.0], "lifebench_n": 90}
    result = {"steps": 300, "eval_every": 50, "curve_prompts": 96, "seed": 0, "recipe": "configs/recipe-cpu.yaml",
              "command": "python benchmarks/long_run.py",
              "runs": {"larft": {"curve": [{**point, "steps": 0}, {**point, "steps": 50, "lifebench_ls": 61.0}]}}}
    long_run, speed = tmp_path / "long_run.json", tmp_path / "learning_speed.json"
    long_run.write_text(json.dumps(result))
    results_md = tmp_path / "results.md"
    experiment_part = "# Results\n\n| run | LS |\n|---|---|\n| base | 50.0 |\n"
    end = page.PAGE_END + " The studies behind it are elsewhere.\n"
    results_md.write_text(experiment_part + "\n" + end)
    page.refresh_appendix(results_md, long_run, speed)  # a page without the section gets one (no speed file: none)
    first = results_md.read_text()
    assert first.startswith(experiment_part) and first.endswith(end)
    assert "LARFT at step 50: **61.0**" in first and first.count("## The long run") == 1
    assert "## Learning per CPU-hour" not in first

    result["runs"]["larft"]["curve"].append({**point, "steps": 100, "lifebench_ls": 66.0})
    long_run.write_text(json.dumps(result))
    speed.write_text(json.dumps(SPEED))
    for _ in range(2):  # both sections replaced, not added again, in page order
        page.refresh_appendix(results_md, long_run, speed)
        second = results_md.read_text()
        assert second.startswith(experiment_part) and second.endswith(end)
        assert second.count("## The long run") == 1 and second.count("## Learning per CPU-hour") == 1
        assert second.index("## Learning per CPU-hour") < second.index("## The long run")
        assert "LARFT at step 100: **66.0**" in second and "step 50: **61.0**" not in second

    results_md.write_text("a page without its last sentence\n")
    with pytest.raises(SystemExit, match="results.md"):
        page.refresh_appendix(results_md, long_run, speed)
