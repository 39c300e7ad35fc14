"""README.md stays short, starts with the two fresh-machine commands, and its results table is
benchmarks/results/experiment.json's figures (it cannot drift from the file)."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
EXPERIMENT = json.loads((ROOT / "benchmarks" / "results" / "experiment.json").read_text())

FIRST_LINES = [
    "# larft",
    "",
    "```bash",
    "./scripts/demo.sh      # fresh machine: set up .venv, then a short LARFT run on the bundled model (6-14 min, 2 CPU cores)",
    "./scripts/test.sh      # fresh machine: set up .venv, then the test suite",
    "```",
]
#: results-table row label (its start) -> the run's key in experiment.json
ROWS = {"base model": "base", "best-of-8": "best_of_8", "GRPO-only": "grpo", "LARFT": "larft", "RFT": "rft",
        "HIR": "hir", "DPO": "dpo"}
BASELINES = ("rft", "hir", "dpo")


def _numbers(cell: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", cell)]


def results_table() -> dict[str, list[str]]:
    """The table under '## Results': run key -> its cells."""
    section = README.split("\n## Results", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["run", "LS [95% CI]", "LS equal-to", "generated tokens / prompt", "train min"], header
    table = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        key = next((k for label, k in ROWS.items() if cells[0].startswith(label)), None)
        assert key is not None, f"README results row {cells[0]!r} names no run of experiment.json"
        table[key] = cells
    return table


def test_readme_is_short_and_starts_with_the_fresh_machine_commands():
    lines = README.splitlines()
    assert len(lines) <= 220, f"README.md has {len(lines)} lines; the reference belongs in docs/usage.md"
    assert lines[: len(FIRST_LINES)] == FIRST_LINES


def test_readme_results_table_is_experiment_json():
    """Every row is its run's figures, or says `pending` for a run experiment.json does not hold yet."""
    runs = EXPERIMENT["runs"]
    table = results_table()
    assert {"base", "best_of_8", "grpo", "larft"} <= set(table)
    for key, (_, ls, equal, tokens, minutes) in table.items():
        if "pending" in ls:
            assert key not in runs and any(s == key or s.startswith(f"{key}-") for s in EXPERIMENT["pending"]), key
            continue
        run = runs[key]
        expected = [run["lifebench_ls"]]  # the run's LS (mean of seeds), then each interval shown
        seeds = run.get("seeds") or {}
        if len(seeds) > 1:
            for seed in seeds.values():
                expected += [seed["lifebench_ls"], *seed["lifebench_ls_ci"]]
        else:
            ci = run.get("lifebench_ls_ci") or next(iter(seeds.values()))["lifebench_ls_ci"]
            expected += list(ci)
        assert [f"{x:.1f}" for x in _numbers(ls)] == [f"{x:.1f}" for x in expected], (key, ls)
        assert f"{_numbers(equal)[0]:.1f}" == f"{run['lifebench_ls_per_control']['equal']:.1f}", (key, equal)
        assert round(_numbers(tokens)[0]) == round(run["gen_tokens_per_prompt"]), (key, tokens)
        assert abs(_numbers(minutes)[0] - run.get("train_minutes", 0.0)) < 0.05 + 1e-9, (key, minutes)


def test_readme_names_the_best_baseline_and_larft_minus_grpo():
    runs = EXPERIMENT["runs"]
    table = results_table()
    present = [k for k in BASELINES if k in runs]
    if present:
        best = max(present, key=lambda k: runs[k]["lifebench_ls"])
        assert best in table and not (set(present) - {best}) & set(table), "the table shows the best baseline only"
    diff = runs.get("larft", {}).get("ls_minus_grpo")
    if diff is not None:
        assert f"LARFT minus GRPO-only: {diff:+.1f} LS".replace("+", "") in README.replace("+", "")
