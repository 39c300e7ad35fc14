"""`larft eval` / `generate` / `data` / `report` options: dataclasses parsed by TRL's parser, one flag
style (underscores) with the earlier hyphenated spellings as the same options, checked once; what the
user got wrong is one line and exit 2, anything else a normal traceback."""

import dataclasses
import json

import pytest

from larft import cli
from larft.errors import UserError
from larft.eval.settings import EvalSettings
from larft.options import (
    DataGenerateArguments, DataValidateArguments, EvalArguments, GenerateArguments, ReportArguments, parse_options,
)

#: every eval option with a value, in the hyphenated spelling of earlier releases (README, docs/, benchmarks/,
#: research/ and examples/ use these) -> the same in TRL's underscore spelling
EVAL_HYPHENATED = [
    "--bench", "lifebench", "--bench-file", "a.jsonl", "--format", "lifebench", "--out", "o", "--limit", "6",
    "--filter", "lang=en", "--batch-size", "4", "--max-new-tokens-cap", "512", "--counting-own", "5",
    "--temperature", "0.5", "--top_p", "0.9", "--seed", "2", "--best-of", "3", "--device", "cpu", "--dtype", "float32",
    "--tokens-per-word", "1.5", "--system-prompt", "none", "--chat-template-kwargs", '{"enable_thinking": false}',
    "--reasoning-delimiters", "none", "--backend", "ct2", "--bootstrap", "50", "--lm-eval-tasks", "a,b",
    "--lm-eval-include-path", "tasks", "--sample", "--trust-remote-code",
]


def _underscored(argv):
    return [a.replace("-", "_").replace("__", "--", 1) if a.startswith("--") else a for a in argv]


def test_hyphenated_and_underscored_spellings_are_the_same_eval_options():
    old = parse_options(EvalArguments, EVAL_HYPHENATED, "larft eval")
    new = parse_options(EvalArguments, _underscored(EVAL_HYPHENATED), "larft eval")
    assert dataclasses.asdict(old) == dataclasses.asdict(new) and old.settings == new.settings
    s = new.settings
    assert (s.batch_size, s.max_new_tokens_cap, s.best_of, s.counting_own, s.tokens_per_word) == (4, 512, 3, 5, 1.5)
    assert s.do_sample and s.system_prompt == "none" and s.chat_template_kwargs == {"enable_thinking": False}
    assert s.filters == {"lang": "en"} and s.backend == "ct2" and s.reasoning_delimiters == "none"
    assert new.trust_remote_code and new.bench_files == [("a.jsonl", "lifebench")] and new.lm_eval_task_list == ["a", "b"]


def test_defaults_are_kept_and_bench_repeats():
    args = parse_options(EvalArguments, ["--out", "o"], "larft eval")
    assert args.settings == EvalSettings() and args.model == "default" and not args.trust_remote_code
    args = parse_options(EvalArguments, ["--out", "o", "--bench", "lifebench", "--bench", "counting", "retention"],
                         "larft eval")
    assert args.bench == ["lifebench", "counting", "retention"]
    gen = parse_options(GenerateArguments, ["--prompt", "x", "--words", "5", "--best-of", "2", "--max_new_tokens", "9",
                                            "--system-prompt", "short"], "larft generate")
    assert (gen.best_of, gen.max_new_tokens, gen.system_prompt, gen.unit, gen.target) == (2, 9, "short", "words", 5)
    assert (gen.n, gen.constraint, gen.temperature, gen.top_p, gen.backend) == (1, "equal", 0.7, 0.8, "hf")
    data = parse_options(DataGenerateArguments, ["--out", "p.jsonl"], "larft data generate")
    assert (data.n, data.seed, data.target_list, data.constraints, data.units, data.styles) == \
        (256, 0, [16, 32, 64, 128, 256, 512], "equal,at_most,at_least", "words", "plain,requirement")
    assert parse_options(DataValidateArguments, ["a", "b"], "larft data validate").files == ["a", "b"]
    report = parse_options(ReportArguments, ["d1", "d2", "--out", "c", "--names", "x,y"], "larft report")
    assert report.dirs == ["d1", "d2"] and report.name_list == ["x", "y"]


def test_a_config_file_sets_options_and_the_command_line_wins(tmp_path):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("out: o\nbench: [lifebench, counting]\nbest_of: 4\nseed: 1\nchat_template_kwargs: {a: 1}\n")
    args = parse_options(EvalArguments, ["--config", str(cfg), "--seed", "5"], "larft eval")
    assert args.bench == ["lifebench", "counting"] and args.settings.best_of == 4 and args.settings.seed == 5
    assert args.settings.chat_template_kwargs == {"a": 1}
    cfg.write_text("out: o\nbest_off: 4\n")
    with pytest.raises(UserError, match="unknown key 'best_off'"):
        parse_options(EvalArguments, ["--config", str(cfg)], "larft eval")


@pytest.mark.parametrize("argv, message", [
    (["eval", "--out", "o", "--filter", "language=en"], "--filter: unknown key 'language'"),
    (["eval", "--out", "o", "--bench-file", "a.jsonl"], "--bench-file needs --format"),
    (["eval", "--out", "o", "--chat_template_kwargs", "[1]"], "expected a JSON object"),
    (["eval", "--out", "o", "--backend", "llamacpp"], "--backend: unknown value 'llamacpp'"),
    (["eval", "--out", "o", "--bogus", "1"], "unknown option(s): --bogus 1"),
    (["generate", "--prompt", "x", "--best_of", "0"], "--best-of must be >= 1"),
    (["generate", "--prompt", "x", "--device", "tpu"], "--device: unknown value 'tpu'"),
    (["data", "generate", "--out", "p.jsonl", "--targets", "ten"], "--targets must be comma-separated integers"),
    (["data", "generate", "--out", "p.jsonl", "--constraints", "roughly"], "unknown constraint 'roughly'"),
    (["data"], "larft data needs a command"),
])
def test_what_the_user_got_wrong_is_one_line_and_exit_2(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("larft: error: ") and err.count("\n") == 1, err
    with pytest.raises(UserError, match=message.split("(")[0]):  # --debug: the traceback
        cli.main(["--debug", *argv])


def test_a_bug_is_a_normal_traceback(monkeypatch):
    import larft.eval.runner as runner

    def broken(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr(runner, "run_eval", broken)
    with pytest.raises(ValueError, match="an internal bug"):  # not turned into `larft: error:` and exit 2
        cli.main(["eval", "--out", "o", "--bench", "counting"])


def test_help_lists_the_commands_and_each_commands_options(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["data", "--help"])
    assert done.value.code == 0 and "validate" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        cli.main(["eval", "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and "--best_of N" in out and "--max_new_tokens_cap" in out and "--best-of" in out


def test_data_generate_through_the_cli(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    assert cli.main(["data", "generate", "--out", str(path), "--n", "5", "--targets", "8,16", "--styles",
                     "plain,requirement"]) == 0
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 5 and {r["reward_model"]["ground_truth"] for r in rows} <= {8, 16}


def test_data_validate_accepts_rows_without_a_target_when_told(tmp_path, capsys):
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps({"prompt": "Tea in 9 words.", "target": 9}) + "\n" + json.dumps({"prompt": "Hi."}) + "\n")
    assert cli.main(["data", "validate", str(path)]) == 1
    assert f"{path}:2: target: missing" in capsys.readouterr().out
    assert cli.main(["data", "validate", str(path), "--require_target", "false"]) == 0
    assert f"{path}: 2 valid row(s), 0 problem(s)" in capsys.readouterr().out


def test_the_config_warns_of_nothing_and_still_takes_the_old_checkpointing_name(tmp_path):
    import warnings

    from larft import LARFTConfig

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # TRL's gradient_checkpointing default warned on transformers 5
        config = LARFTConfig(output_dir=str(tmp_path), report_to="none")
    assert config.activation_checkpointing is False and config.gradient_checkpointing is False
    with pytest.warns(FutureWarning, match="activation_checkpointing"):
        old = LARFTConfig(output_dir=str(tmp_path), report_to="none", gradient_checkpointing=True)
    assert old.activation_checkpointing is True
    assert LARFTConfig(output_dir=str(tmp_path), report_to="none", activation_checkpointing=True).gradient_checkpointing
