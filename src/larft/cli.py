"""The `larft` command line: train, data (generate/convert/validate), generate, eval, report.

What the user got wrong (`larft.errors.UserError`: an option, an input file, a missing extra) is
one line, `larft: error: ...`, and exit status 2 (`--debug` shows its traceback too); anything
else is a bug or an environment failure and ends in Python's normal traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import yaml
from trl import ModelConfig, ScriptArguments  # light: trl imports its modules lazily

from larft.baselines import BaselineConfig  # a dataclass only: torch / TRL trainers load when a baseline runs
from larft.errors import UserError
from larft.logs import to_console

UsageError = UserError  # the earlier name: a problem with how larft was called (bad config key, missing file, ...)


# -- train --------------------------------------------------------------------------------
# The options of `larft train` are TRL's own dataclasses (ScriptArguments: the dataset;
# ModelConfig: model loading, LoRA, 4-bit) plus larft's fields, parsed by TRL's TrlParser: the
# same parser, YAML `--config` handling and option names as TRL's `trl grpo` script.


class _RepeatableList(argparse.Action):
    """`--reward_funcs a --reward_funcs b,c`: every occurrence on the command line adds to the
    list; the first one replaces the YAML's value (the command line overrides the config)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.seen = False

    def __call__(self, parser, namespace, values, option_string=None):
        before = list(getattr(namespace, self.dest) or []) if self.seen else []
        self.seen = True
        setattr(namespace, self.dest, before + list(values))


def _comma_list(value: Any) -> list[str]:
    """A list option given as a YAML list, space-separated or comma-separated values."""
    items = [value] if isinstance(value, str) else list(value or [])
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


@dataclasses.dataclass
class TrainArguments(ScriptArguments, ModelConfig, BaselineConfig):
    """Options of `larft train` that are not LARFTConfig (training hyperparameter) fields: TRL's
    ScriptArguments and ModelConfig, with larft's defaults where they differ, plus larft's own
    (BaselineConfig: --method and the RFT / HIR / DPO baselines' settings)."""

    _argument_group_name = "model, data, rewards, LoRA / QLoRA (TRL's ScriptArguments and ModelConfig, plus larft's)"

    model: str = dataclasses.field(
        default="default", metadata={"help": "'default' (bundled SmolLM2-135M-Instruct), an HF id or a local path "
                                             "(--model_name_or_path is the same option, TRL's name)."}
    )
    train_file: str | None = dataclasses.field(
        default=None, metadata={"help": "A local JSONL/JSON/Parquet/CSV prompt set, the same as --dataset_name with "
                                        "a local file (neither: train_size generated prompts)."}
    )
    train_size: int = dataclasses.field(default=256, metadata={"help": "Generated prompts when no dataset is given."})
    train_targets: str = dataclasses.field(
        default="16,32,64", metadata={"help": "Targets of generated prompts (comma-separated)."}
    )
    train_constraints: str = dataclasses.field(
        default="equal,at_most,at_least", metadata={"help": "Constraints of generated prompts (comma-separated)."}
    )
    train_styles: str = dataclasses.field(
        default="plain", metadata={"help": "Prompt styles of generated prompts: plain, requirement (comma-separated)."}
    )
    skip_invalid: bool = dataclasses.field(
        default=False, metadata={"help": "Train on the valid rows of a dataset with invalid ones (and report them)."}
    )
    reward_funcs: list[str] | None = dataclasses.field(
        default=None, metadata={
            "help": "Reward functions of yours, added after the length reward: dotted import paths (my_rewards.fn; "
                    "the current folder is importable), space- or comma-separated, repeatable, each with TRL's "
                    "signature (prompts, completions, dataset columns -> one float or None per completion).",
            "action": _RepeatableList,
        }
    )
    merge_lora: bool = dataclasses.field(
        default=True, metadata={"help": "After LoRA training, also save the merged full model in OUTPUT_DIR/merged."}
    )
    max_prompt_tokens: int | None = dataclasses.field(
        default=1024, metadata={"help": "Refuse prompts longer than this (tokens, chat template applied)."}
    )
    resume: bool = dataclasses.field(
        default=False, metadata={"help": "Continue from the latest checkpoint in output_dir."}
    )
    dry_run: bool = dataclasses.field(
        default=False, metadata={"help": "Check the run (options, data, prompts, the model's config and tokenizer; "
                                          "no weights), print its estimated peak memory per device part by part, "
                                          "and exit: 0 when it fits, 1 when not. Writes nothing."}
    )
    device_memory: str | None = dataclasses.field(
        default=None, metadata={"help": "--dry_run: the memory of one device to fit (80GB, 24GiB; default: this "
                                        "machine's first GPU, else its RAM)."}
    )
    accelerate_config: str | None = dataclasses.field(
        default=None, metadata={"help": "--dry_run: the accelerate config the run will be launched with (its "
                                        "strategy and num_processes; default: how this process was launched)."}
    )
    dry_run_device: str | None = dataclasses.field(
        default=None, metadata={"help": "--dry_run: estimate for cuda or cpu (default: cuda with --device_memory "
                                        "or a GPU here, else cpu).", "choices": ["cuda", "cpu"]}
    )
    # ModelConfig fields with larft's meaning
    lora_r: int = dataclasses.field(
        default=0, metadata={"help": "LoRA rank: > 0 trains a LoRA adapter (pip install 'larft[peft]'), 0 all "
                                     "weights unless --use_peft or --load_in_4bit/8bit (then rank 16)."}
    )
    lora_target_modules: list[str] | None = dataclasses.field(
        default=None, metadata={"help": "Modules to adapt: all-linear (the default) or names, space- or "
                                        "comma-separated (q_proj,v_proj)."}
    )
    dataset_name: str | None = dataclasses.field(
        default=None, metadata={"help": "The prompt set: a Hub dataset id, or a local JSONL/JSON/Parquet/CSV file or "
                                        "folder (read by datasets.load_dataset; every row validated)."}
    )

    def __post_init__(self):
        super().__post_init__()  # ModelConfig's: 4-bit and 8-bit together are refused
        if self.model_name_or_path and self.model_name_or_path != self.model:
            if self.model != "default":
                raise UsageError(f"--model {self.model} and --model_name_or_path {self.model_name_or_path} disagree: "
                                 "give one of them")
            self.model = self.model_name_or_path
        self.model_name_or_path = self.model
        if self.train_file and self.dataset_name and self.train_file != self.dataset_name:
            raise UsageError("--train_file and --dataset_name both name a prompt set: give one of them")
        for name in ("train_targets", "train_constraints", "train_styles"):  # a YAML list works too
            if not isinstance(getattr(self, name), str):
                setattr(self, name, ",".join(_comma_list(getattr(self, name))))
        self.reward_funcs = _comma_list(self.reward_funcs) or None
        # ScriptArguments fields larft has no use for: refused rather than silently ignored
        if self.dataset_streaming:
            raise UsageError("--dataset_streaming: larft validates the whole prompt set and holds some of it out "
                             "before training, so it does not stream datasets")
        if self.dataset_test_split != "test":
            raise UsageError("--dataset_test_split: larft does not evaluate during training (see `larft eval`)")
        if self.ignore_bias_buffers:
            raise UsageError("--ignore_bias_buffers is not used by larft")
        if self.lora_r < 0:
            raise UsageError(f"--lora_r must be >= 0, got {self.lora_r}")
        # LoRA is on with --use_peft (TRL's switch), a rank (larft's), or a quantized base: a 4/8-bit
        # model cannot be trained itself, only an adapter on it (QLoRA)
        if self.lora_r > 0 or self.load_in_4bit or self.load_in_8bit:
            self.use_peft = True
        if self.use_peft and not self.lora_r:
            self.lora_r = 16  # TRL's default rank
        modules = _comma_list(self.lora_target_modules) or ["all-linear"]
        self.lora_target_modules = modules[0] if modules == ["all-linear"] else modules
        try:
            self.check_baseline()
        except ValueError as e:
            raise UsageError(str(e)) from None


def _cli_text(value: Any) -> Any:
    """A YAML scalar as the text it would be on the command line, so argparse types it the same
    way (YAML 1.1 reads `1e-5` as a string; `true` as a bool): one parser for both."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None or isinstance(value, (list, dict, str)):
        return value
    return str(value)


def _train_parser() -> Any:
    from trl import TrlParser

    from larft.config import LARFTConfig

    class LARFTParser(TrlParser):
        """TRL's parser; YAML values are typed like command-line text and unknown YAML keys kept for one error."""

        unknown_config_keys: list[str] = []

        def set_defaults_with_config(self, **kwargs: Any) -> list[str]:
            remaining = super().set_defaults_with_config(**{k: _cli_text(v) for k, v in kwargs.items()})
            self.unknown_config_keys = [option[2:] for option in remaining[::2]]
            return remaining

    parser = LARFTParser(
        (TrainArguments, LARFTConfig), prog="larft train", allow_abbrev=False,
        description="LARFT training. --config FILE.yaml sets any of the options below (an `env:` mapping sets "
                    "environment variables); --option value on the command line overrides the file.",
    )
    parser.set_defaults_with_config(output_dir="outputs/larft")
    return parser


def parse_train_args(argv: list[str]) -> tuple[TrainArguments, Any]:
    """(TrainArguments, LARFTConfig) from `--config FILE.yaml` plus command-line overrides."""
    argv = list(argv)
    config_path = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise UsageError("--config needs a YAML file")
        config_path = argv[i + 1]
        _check_config_file(config_path)
    parser = _train_parser()
    try:
        train_args, config, config_rest, rest = parser.parse_args_and_config(
            argv, return_remaining_strings=True, separate_remaining_strings=True
        )
    except SystemExit as e:  # argparse already printed the problem
        raise UsageError("invalid command-line or config value (see the message above)") from e
    except UserError:
        raise
    except ValueError as e:  # a TRL / transformers config check (__post_init__) refused the values given
        raise UsageError(str(e)) from e
    if config_rest:
        keys = parser.unknown_config_keys
        raise UsageError(f"config file {config_path}: unknown key{'s' if len(keys) > 1 else ''} "
                         f"{', '.join(repr(k) for k in keys)} (see `larft train --help`)")
    if rest:
        raise UsageError(f"unknown option(s): {' '.join(rest)} (see `larft train --help`)")
    return train_args, config


def _check_config_file(path: str) -> None:
    """A missing, unreadable or non-mapping config is one clear error before TRL's parser reads it."""
    config_path = Path(path)
    if not config_path.is_file():
        raise UsageError(f"config file {path}: not found")
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UsageError(f"config file {path}: not valid YAML: {e}") from None
    if not isinstance(config, dict):
        raise UsageError(f"config file {path}: must be a mapping of option: value")


def explicit_options(argv: list[str]) -> set[str]:
    """The option names a `larft train` command sets itself: on its command line or in its --config file."""
    names = {a[2:].split("=", 1)[0] for a in argv if a.startswith("--")}
    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        data = yaml.safe_load(Path(argv[argv.index("--config") + 1]).read_text(encoding="utf-8")) or {}
        names |= set(data) if isinstance(data, dict) else set()
    return names


def run_train(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        _train_parser().print_help()
        return 0
    train_args, config = parse_train_args(argv)
    if train_args.dry_run:
        from larft.dry_run import dry_run

        return dry_run(train_args, config, explicit_options(argv))
    if train_args.method == "larft":
        from larft.train import train
    else:  # --method rft / hir / dpo: the baselines, same data and outputs
        from larft.baselines import train_baseline as train
    train(train_args, config)
    return 0


# -- data ---------------------------------------------------------------------------------
# The options of data, generate, eval and report are dataclasses too (larft.options), parsed by
# the same TRL parser as train's: one flag style (--best_of; --best-of is the same option).
def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def run_data(argv: list[str]) -> int:
    from larft import data
    from larft.loader import read_rows
    from larft.options import DataConvertArguments, DataGenerateArguments, DataValidateArguments, parse_options

    commands = {"generate": DataGenerateArguments, "convert": DataConvertArguments, "validate": DataValidateArguments}
    command = argv[0] if argv else None
    if command in ("-h", "--help"):
        build_parser().parse_args(["data", "--help"])  # lists the commands and exits
    if command not in commands:
        raise UserError("larft data needs a command: generate, convert or validate")
    args = parse_options(commands[command], argv[1:], f"larft data {command}")
    if command == "generate":
        rows = data.generate_rows(
            args.n, targets=args.target_list, constraints=_csv(args.constraints), units=_csv(args.units),
            seed=args.seed, styles=_csv(args.styles),
        )
        data.write_rows(rows, args.out)
        print(f"wrote {len(rows)} prompts to {args.out}")
        return 0
    if command == "convert":
        n = data.convert_file(args.src, args.dst)
        print(f"converted {n} records: {args.src} -> {args.dst}")
        return 0
    bad = 0
    for path in args.files:
        rows, issues = read_rows(path, require_target=args.require_target)
        for issue in issues:
            print(issue)
        bad += len(issues)
        print(f"{path}: {len(rows)} valid row(s), {len(issues)} problem(s)")
    return 1 if bad else 0


# -- generate -----------------------------------------------------------------------------
_SUFFIX = {"equal": "Answer in about {n} {u}.", "at_most": "Answer in at most {n} {u}.", "at_least": "Answer in at least {n} {u}."}


def generation_budget(tokenizer: Any, target: int | None, unit: str, constraint: str) -> int:
    """`larft generate`'s default max_new_tokens: room to reach the length where a cut answer's score
    is ~0 (`larft.budget`; characters counted as words at the tokenizer's rate, a generous bound)."""
    if not target:
        return 256
    from larft.budget import answer_budget

    return answer_budget(target, tokenizer, constraint)


def run_generate(argv: list[str]) -> int:
    from larft.generation import generate_records
    from larft.length import DEFAULT_REASONING
    from larft.length import measure
    from larft.models import load_model, load_tokenizer, resolve_device
    from larft.options import GenerateArguments, parse_options

    args = parse_options(GenerateArguments, argv, "larft generate")  # every value checked here
    unit, target = args.unit, args.target
    content = args.prompt
    if target:
        wording = {"words": "words", "chars": "characters"}[unit]
        content = f"{args.prompt}\n\n{_SUFFIX[args.constraint].format(n=target, u=wording)}"
    device, dtype = resolve_device(args.device, args.dtype)
    tokenizer = load_tokenizer(args.model)
    max_new = args.max_new_tokens or generation_budget(tokenizer, target, unit, args.constraint)
    model = load_model(args.model, dtype=dtype, device=device)
    engine_generate = None
    if args.backend == "ct2":
        from larft.ct2_engine import check_convertible, records_generator

        try:
            check_convertible(model.config)
        except RuntimeError as err:
            raise UserError(str(err)) from None
        engine_generate = records_generator(model, tokenizer)
    from larft.generation import with_system_prompt

    messages = with_system_prompt([{"role": "user", "content": content}], args.system_prompt)
    if args.best_of > 1:
        from larft.best_of import best_of_n

        row = {"prompt": messages, "target": target, "constraint": args.constraint,
               "unit": unit}
        groups = best_of_n(model, tokenizer, [row] * args.n, args.best_of, max_new_tokens=max_new,
                           temperature=args.temperature, top_p=args.top_p, generate=engine_generate)
        for group in groups:
            print(group.text)
            print(f"\n[{measure(group.text, unit, tokenizer=tokenizer)} {unit}; asked {args.constraint} {target}; "
                  f"best of {args.best_of}: sample {group.best_index + 1}, reward {group.reward:.2f} (all: "
                  f"{', '.join(f'{r:.2f}' for r in group.rewards)}); {group.gen_tokens} tokens generated]")
        return 0
    texts = [r.text for r in (engine_generate or generate_records)(
        model, tokenizer, [messages] * args.n, max_new_tokens=max_new,
        do_sample=args.sample or args.n > 1, temperature=args.temperature, top_p=args.top_p,
        reasoning=DEFAULT_REASONING,
    )]
    for text in texts:
        print(text)
        print(f"\n[{measure(text, unit, tokenizer=tokenizer)} {unit}" + (f"; asked {args.constraint} {target}]" if target else "]"))
    return 0


# -- eval / report --------------------------------------------------------------------------
def run_eval_command(argv: list[str]) -> int:
    from larft.eval.runner import run_eval
    from larft.options import EvalArguments, parse_options

    args = parse_options(EvalArguments, argv, "larft eval")  # every value checked here, before any file is read
    results = run_eval(args.model, args.bench or [], args.out, args.settings, args.bench_files,
                       trust_remote_code=args.trust_remote_code, lm_eval_tasks=args.lm_eval_task_list,
                       lm_eval_include_path=args.lm_eval_include_path)
    from larft.eval.report import markdown

    print(markdown(results))
    print(f"results: {Path(args.out) / 'results.json'}  report: {Path(args.out) / 'report.md'}")
    return 0


def run_report(argv: list[str]) -> int:
    from larft.eval.report import compare
    from larft.options import ReportArguments, parse_options

    args = parse_options(ReportArguments, argv, "larft report")
    path = compare(args.dirs, args.out, names=args.name_list)
    print(path.read_text(encoding="utf-8"))
    return 0


# -- entry point --------------------------------------------------------------------------
COMMANDS = {"data": run_data, "generate": run_generate, "eval": run_eval_command, "report": run_report}


def build_parser() -> argparse.ArgumentParser:
    """The command list (`larft --help`, `larft data --help`); each command parses its own options."""
    parser = argparse.ArgumentParser(
        prog="larft", description="Length-Aware Reinforcement Fine-Tuning: teach LMs to follow length instructions."
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of a user error too (any other error always shows it)")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("train", help="LARFT training (YAML config + --field value overrides)", add_help=False)
    data_p = sub.add_parser("data", help="generate, convert and validate prompt sets")
    data_sub = data_p.add_subparsers(dest="data_command")
    data_sub.add_parser("generate", help="length-constrained prompts (official LARFT JSONL shape)", add_help=False)
    data_sub.add_parser("convert", help="JSONL <-> Parquet (official LARFT format accepted)", add_help=False)
    data_sub.add_parser("validate", help="report every problem as file:line: field: message", add_help=False)
    sub.add_parser("generate", help="length-constrained generation", add_help=False)
    sub.add_parser("eval", help="length-following benchmarks, counting probe, retention check", add_help=False)
    sub.add_parser("report", help="compare several eval folders side by side", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    command = argv[0] if argv else None
    to_console()  # larft's log lines as `[larft] message` on stderr (main process only under accelerate)
    try:
        if argv and argv[0] == "train":
            return run_train(argv[1:])
        if command in COMMANDS:
            return COMMANDS[command](argv[1:])
        parser = build_parser()
        parser.parse_args(argv)  # --help; an unknown command is argparse's error (exit 2)
        parser.print_help()
        return 0 if not argv else 2
    except KeyboardInterrupt:
        print("larft: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # what the user got wrong is one line (exit 2); anything else a normal traceback
        if debug:
            raise
        from larft.interrupt import TrainingInterrupted
        from larft.train import TrainingFailed

        if isinstance(e, TrainingInterrupted):
            print(f"larft: {e}", file=sys.stderr)
            return 128 + e.signum
        if isinstance(e, TrainingFailed):
            print(f"larft: error: {e}", file=sys.stderr)
            return 1
        if isinstance(e, UserError):
            print(f"larft: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
