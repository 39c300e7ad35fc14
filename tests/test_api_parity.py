"""Every LARFTConfig field does the same from Python as from `larft train`: the CLI is a parser over the
same LARFTTrainer, which itself holds out the length check's prompts, puts the system message on every
rollout, writes metrics.jsonl and the length check, and warns about budgets."""

import json

import pytest

from larft.data import generate_rows

SETTINGS = {"max_steps": 2, "num_generations": 2, "per_device_train_batch_size": 4, "max_completion_length": 8,
            "awareness_lambda_max": 0.5, "length_check_prompts": 2, "system_prompt": "Be brief.", "seed": 0,
            "report_to": "none", "save_strategy": "no", "learning_rate": 1e-3}


def _rollout_prompts(out):
    return [(r["step"], r.get("system"), r["prompt"], r["target"])
            for r in map(json.loads, (out / "rollouts.jsonl").read_text().splitlines())]


@pytest.mark.slow
def test_cli_and_python_api_write_the_same_files_and_roll_out_the_same_prompts(tiny_model_dir, tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in generate_rows(12, targets=[4, 8], seed=3)))

    from larft.cli import main

    cli_out = tmp_path / "cli"
    flags = [x for k, v in SETTINGS.items() for x in (f"--{k}", str(v))]
    assert main(["train", "--model", str(tiny_model_dir), "--train_file", str(data), "--output_dir", str(cli_out),
                 *flags]) == 0

    from datasets import Dataset

    from larft import LARFTConfig, LARFTTrainer

    api_out = tmp_path / "api"
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    trainer = LARFTTrainer(model=str(tiny_model_dir), args=LARFTConfig(str(api_out), **SETTINGS),
                           train_dataset=Dataset.from_list(rows))
    trainer.train()
    trainer.save_model(str(api_out))

    cli_files = {p.name for p in cli_out.iterdir()} - {"larft_run.json"}  # the CLI's record for --resume
    assert {"metrics.jsonl", "rollouts.jsonl", "length_check.json", "README.md"} <= cli_files
    assert {p.name for p in api_out.iterdir()} == cli_files
    assert _rollout_prompts(api_out) == _rollout_prompts(cli_out)  # same prompts, in the same order
    assert {system for _, system, _, _ in _rollout_prompts(api_out)} == {"Be brief."}
    checks = [json.loads((out / "length_check.json").read_text()) for out in (cli_out, api_out)]
    assert [r["prompt"] for r in checks[0]["before"]] == [r["prompt"] for r in checks[1]["before"]]
    assert len(checks[1]["before"]) == len(checks[1]["after"]) == 2
    held_out = {r["prompt"] for r in checks[1]["before"]}
    assert not held_out & {prompt for _, _, prompt, _ in _rollout_prompts(api_out)}  # never trained on
    steps = [[json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] for out in (cli_out, api_out)]
    assert steps == [[1, 2], [1, 2]]
    assert "asked" in (api_out / "README.md").read_text().lower()  # the card shows the length check


def test_a_streamed_dataset_cannot_hold_out_prompts(tiny_model_dir, tmp_path):
    from datasets import Dataset

    from larft import LARFTConfig, LARFTTrainer
    from larft.errors import UserError

    rows = generate_rows(8, targets=[4], seed=1)
    stream = Dataset.from_list(rows).to_iterable_dataset()
    with pytest.raises(UserError, match="length_check_prompts=2 holds out rows"):
        LARFTTrainer(model=str(tiny_model_dir), args=LARFTConfig(str(tmp_path), **{**SETTINGS, "max_steps": 1}),
                     train_dataset=stream)
