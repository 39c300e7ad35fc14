"""`larft train` options built on TRL's parsers: --dataset_name (local files through
`datasets`, Hub ids), --reward_funcs, LoRA / QLoRA (ModelConfig) and the YAML/CLI rules."""

import json
from functools import partial
from pathlib import Path

import pytest
import torch

import helpers
from larft.cli import parse_train_args
from larft.train import train

PROMPTS = [f"Describe tea in {n} words." for n in (5, 6, 7, 8)]
#: the console script: it does not put the cwd on sys.path (--reward_funcs must do it)
larft = partial(helpers.larft, console_script=True)


def _common(model_dir, out):
    return ["--model", str(model_dir), "--output_dir", str(out), "--max_steps", "1", "--num_generations", "2",
            "--per_device_train_batch_size", "4", "--max_completion_length", "8", "--report_to", "none",
            "--save_strategy", "no"]


def _chat(prompt, answer="An answer."):
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt},
            {"role": "assistant", "content": answer}]


def _write(path: Path, rows: list[dict]) -> Path:
    """rows as a .jsonl, .json array, .parquet or .csv file (CSV cells: chat messages as JSON text)."""
    if path.suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=2))
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".csv":
        import csv

        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(list(rows[0]))
            for row in rows:
                writer.writerow([json.dumps(v) if isinstance(v, list) else v for v in row.values()])
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", ".csv"])
def test_dataset_name_trains_on_a_local_file_with_a_messages_column(tmp_path, tiny_model_dir, suffix):
    data = _write(tmp_path / f"chats{suffix}", [{"messages": _chat(p), "target": n, "source_id": f"id{n}"}
                                                for p, n in zip(PROMPTS, (5, 6, 7, 8))])
    out = tmp_path / "run"
    train_args, config = parse_train_args([*_common(tiny_model_dir, out), "--dataset_name", str(data)])
    train(train_args, config)
    assert json.loads((out / "larft_run.json").read_text())["train_rows"] == 4
    trace = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    # the prompt is the chat up to its last user turn: the trailing assistant answer was dropped
    assert len(trace) == 4 and {r["prompt"] for r in trace} <= set(PROMPTS)
    assert {r["target"] for r in trace} <= {5, 6, 7, 8}


def test_train_file_is_read_like_dataset_name(tmp_path, tiny_model_dir):
    data = _write(tmp_path / "prompts.json", [{"prompt": p, "target": 5} for p in PROMPTS])
    out = tmp_path / "run"
    train_args, config = parse_train_args([*_common(tiny_model_dir, out), "--train_file", str(data)])
    train(train_args, config)  # a JSON array: read through `datasets` like --dataset_name
    assert json.loads((out / "larft_run.json").read_text())["train_file"] == str(data)


BAD = [  # (file, where the bad row is reported): a JSONL line counts blank lines, a CSV line counts the header
    (".jsonl", 4), (".json", 3), (".parquet", 3), (".csv", 4),
]


@pytest.mark.subprocess
@pytest.mark.parametrize("suffix, line", BAD, ids=[b[0] for b in BAD])
def test_a_bad_row_is_named_by_file_line_and_field(tmp_path, tiny_model_dir, suffix, line):
    rows = [{"messages": _chat(PROMPTS[0]), "target": 5}, {"messages": _chat(PROMPTS[1]), "target": 6},
            {"messages": _chat(PROMPTS[2]), "target": -3}]
    path = _write(tmp_path / f"bad{suffix}", rows)
    if suffix == ".jsonl":  # a blank line: the bad row is on line 4 of the file
        lines = path.read_text().splitlines()
        path.write_text("\n".join(lines[:2] + [""] + lines[2:]) + "\n")
    out = larft("train", *_common(tiny_model_dir, tmp_path / "o"), "--dataset_name", str(path))
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"{path}:{line}: target: must be positive, got -3" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.subprocess
def test_malformed_files_are_named_by_line_and_skip_invalid_keeps_the_good_rows(tmp_path, tiny_model_dir):
    jsonl = tmp_path / "broken.jsonl"  # datasets refuses the whole file for one bad line
    good = [json.dumps({"prompt": p, "target": 5}) for p in PROMPTS]
    jsonl.write_text("\n".join(good + ['{"prompt": "x" "target": 3}']) + "\n")
    array = tmp_path / "broken.json"
    array.write_text('[{"prompt": "a", "target": 3},\n {"prompt": "b" "target": 4}]')
    messages = _write(tmp_path / "text.csv", [{"messages": "Describe tea.", "target": 5}])
    for path, expected in [(jsonl, f"{jsonl}:5: malformed JSON"), (array, f"{array}:2: malformed JSON"),
                           (messages, f"{messages}:2: messages: must be a list of chat messages")]:
        out = larft("train", *_common(tiny_model_dir, tmp_path / "o"), "--dataset_name", str(path))
        assert out.returncode == 2 and expected in out.stderr, out.stderr[-2000:]
        assert "Traceback" not in out.stderr
    out = tmp_path / "skipped"
    train_args, config = parse_train_args([*_common(tiny_model_dir, out), "--dataset_name", str(jsonl),
                                           "--skip_invalid", "true"])
    train(train_args, config)
    assert json.loads((out / "larft_run.json").read_text())["train_rows"] == 4


@pytest.mark.subprocess
def test_a_hub_dataset_that_cannot_be_reached_is_one_clear_error(tmp_path, tiny_model_dir):
    out = larft("train", *_common(tiny_model_dir, tmp_path / "o"), "--dataset_name", "larft-test/no-such-prompts",
                env={"HF_HUB_OFFLINE": "1"})
    assert out.returncode == 2, out.stderr[-2000:]
    message = out.stderr.strip().splitlines()[-1]
    assert message.startswith("larft: error: --dataset_name larft-test/no-such-prompts:")
    assert "HF_HUB_OFFLINE" in message and "Download it" in message and "local file" in message
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "o").exists()  # nothing was started


REWARDS = '''
def brevity(prompts, completions, source_id, **columns):
    """Fewer characters, more reward; it also sees the dataset's extra column."""
    assert all(s.startswith("id") for s in source_id)
    return [1.0 / (1 + len(str(c))) for c in completions]


def constant(prompts, completions, **columns):
    return [0.25] * len(completions)
'''


@pytest.mark.subprocess
def test_reward_funcs_are_added_to_the_length_reward_and_logged(tmp_path, tiny_model_dir):
    (tmp_path / "my_rewards.py").write_text(REWARDS)
    data = _write(tmp_path / "p.jsonl", [{"prompt": p, "target": 5, "source_id": f"id{i}"}
                                         for i, p in enumerate(PROMPTS)])
    out = larft("train", *_common(tiny_model_dir, tmp_path / "run"), "--dataset_name", str(data),
                "--reward_funcs", "my_rewards.brevity,my_rewards.constant", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1
    step = metrics[0]
    assert step["rewards/constant/mean"] == pytest.approx(0.25)
    assert 0 < step["rewards/brevity/mean"] < 1
    assert "rewards/length_reward/mean" in step  # the length reward is still there, first
    assert step["reward"] == pytest.approx(
        step["rewards/length_reward/mean"] + step["rewards/brevity/mean"] + step["rewards/constant/mean"], abs=1e-5)
    trace = json.loads((tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()[0])
    assert list(k for k in trace if k.startswith("reward/")) == ["reward/length_reward", "reward/brevity",
                                                                 "reward/constant"]


MIXED_REWARDS = '''
def colour(prompts, completions, target, **columns):
    """Scores only the prompts without a length target (the length reward scores the others)."""
    return [None if t is not None else 0.5 for t in target]
'''


@pytest.mark.subprocess
def test_a_file_mixing_length_prompts_with_prompts_only_your_reward_scores_trains_from_the_cli(tmp_path,
                                                                                               tiny_model_dir):
    (tmp_path / "mixed_rewards.py").write_text(MIXED_REWARDS)
    rows = [{"prompt": p, "target": n} for p, n in zip(PROMPTS, (5, 6, 7))] + [{"prompt": "Name a colour."},
                                                                                {"prompt": "Name a fruit."}]
    data = _write(tmp_path / "mixed.jsonl", rows)
    refused = larft("train", *_common(tiny_model_dir, tmp_path / "a"), "--train_file", str(data), cwd=tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"{data}:4: target: missing" in refused.stderr and f"{data}:5: target: missing" in refused.stderr
    assert "--reward_funcs" in refused.stderr  # what to do about it

    out = larft("train", *_common(tiny_model_dir, tmp_path / "run"), "--train_file", str(data), "--reward_funcs",
                "mixed_rewards.colour", "--length_check_prompts", "1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "larft_run.json").read_text())
    assert record["train_rows"] == 4 and record["held_out"] == [2]  # the last row *with a target* is held out
    trace = [json.loads(line) for line in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    for rollout in trace:
        if rollout["target"] is None:
            assert rollout["prompt"] in ("Name a colour.", "Name a fruit.") and rollout["reward/colour"] == 0.5
        else:
            assert rollout["prompt"] in PROMPTS[:2] and rollout["reward/length_reward"] is not None
    check = json.loads((tmp_path / "run" / "length_check.json").read_text())
    assert [r["target"] for r in check["before"]] == [7]


def test_reward_funcs_is_repeatable_comma_separated_and_overrides_the_yaml(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("reward_funcs: a.one,b.two\n")
    assert parse_train_args(["--config", str(cfg)])[0].reward_funcs == ["a.one", "b.two"]
    cfg.write_text("reward_funcs: [a.one, b.two]\n")
    assert parse_train_args(["--config", str(cfg)])[0].reward_funcs == ["a.one", "b.two"]
    args = ["--config", str(cfg), "--reward_funcs", "c.three,d.four", "--reward_funcs", "e.five", "f.six"]
    assert parse_train_args(args)[0].reward_funcs == ["c.three", "d.four", "e.five", "f.six"]


@pytest.mark.parametrize("path, message", [
    ("no_such_module.fn", "cannot import module 'no_such_module'"),
    ("my_rewards.missing", "module 'my_rewards' has no attribute 'missing'"),
    ("my_rewards.NOT_A_FUNCTION", "int is not callable"),
    ("brevity", "expected a dotted path module.function"),
    ("broken_rewards.fn", "importing 'broken_rewards' failed: ZeroDivisionError"),
])
@pytest.mark.subprocess
def test_a_bad_reward_funcs_path_is_one_clear_error_before_the_model_loads(tmp_path, path, message):
    (tmp_path / "my_rewards.py").write_text(REWARDS + "\nNOT_A_FUNCTION = 3\n")
    (tmp_path / "broken_rewards.py").write_text("1 / 0\n")
    out = larft("train", "--model", str(tmp_path / "no-model-here"), "--reward_funcs", path, "--output_dir",
                str(tmp_path / "o"), cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"larft: error: --reward_funcs {path}: {message}" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.subprocess
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU refusal; QLoRA itself needs a GPU")
def test_load_in_4bit_on_cpu_is_one_clear_error_before_the_model_loads(tmp_path):
    out = larft("train", "--model", str(tmp_path / "no-model-here"), "--load_in_4bit", "true", "--output_dir",
                str(tmp_path / "o"))
    assert out.returncode == 2, out.stderr[-2000:]
    assert "--load_in_4bit (QLoRA) needs a CUDA GPU and `pip install bitsandbytes`" in out.stderr
    assert "Traceback" not in out.stderr


def test_lora_options_map_onto_trls_model_config():
    from peft import LoraConfig

    from larft.train import lora_config

    plain, _ = parse_train_args([])
    assert not plain.use_peft and lora_config(plain) is None  # full fine-tuning by default
    larft_style, _ = parse_train_args(["--lora_r", "4", "--lora_target_modules", "q_proj,v_proj"])
    trl_style, _ = parse_train_args(["--use_peft", "--lora_target_modules", "q_proj", "v_proj", "--lora_alpha", "8"])
    qlora, _ = parse_train_args(["--load_in_4bit", "true"])
    for args, r, modules in [(larft_style, 4, {"q_proj", "v_proj"}), (trl_style, 16, {"q_proj", "v_proj"}),
                             (qlora, 16, "all-linear")]:
        config = lora_config(args)
        assert isinstance(config, LoraConfig) and args.use_peft
        assert config.r == r and config.target_modules == modules and config.task_type == "CAUSAL_LM"
    assert lora_config(trl_style).lora_alpha == 8


@pytest.mark.subprocess
def test_yaml_takes_trl_option_names_and_refuses_unknown_keys(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset_name: data/train.jsonl\nuse_peft: true\nlearning_rate: 1e-5\n"
                   "lora_target_modules: [q_proj, v_proj]\nmodel_name_or_path: some/model\n")
    train_args, config = parse_train_args(["--config", str(cfg)])
    assert train_args.dataset_name == "data/train.jsonl" and train_args.use_peft and config.learning_rate == 1e-5
    assert train_args.lora_target_modules == ["q_proj", "v_proj"] and train_args.model == "some/model"
    cfg.write_text("dataset_name: data/train.jsonl\nuse_pef: true\n")
    out = helpers.larft("train", "--config", str(cfg))
    assert out.returncode == 2 and f"config file {cfg}: unknown key 'use_pef'" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.subprocess
def test_an_unknown_or_abbreviated_option_on_the_command_line_is_refused(tmp_path, tiny_model_dir):
    for option in ("--learning_rat", "--dataset_nam", "--no_such_option"):  # argparse would take a prefix as the option
        out = larft("train", *_common(tiny_model_dir, tmp_path / "o"), "--train_size", "8", option, "0.1")
        assert out.returncode == 2, (option, out.stderr[-2000:])
        assert f"unknown option(s): {option} 0.1" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.subprocess
def test_help_lists_larft_and_trl_options():
    out = larft("train", "--help")
    assert out.returncode == 0
    for option in ("--model", "--train_file", "--dataset_name", "--dataset_config", "--dataset_train_split",
                   "--reward_funcs", "--use_peft", "--load_in_4bit", "--lora_r", "--lora_target_modules",
                   "--merge_lora", "--awareness_lambda_max", "--learning_rate", "--resume", "--config"):
        assert option in out.stdout, option
