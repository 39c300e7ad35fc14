"""The options of `larft eval`, `generate`, `data` and `report` as dataclasses, parsed as `larft
train`'s are: by TRL's `TrlParser` (transformers' HfArgumentParser), so `--config FILE.yaml` sets
any of them and the command line overrides it.

One flag style, TRL's: the field name with underscores (`--best_of`, `--batch_size`,
`--max_new_tokens_cap`); the parser also takes each with hyphens (`--best-of`, `--batch-size`),
the spelling of larft's earlier releases. Every value is checked once, when the dataclass is
built; what the user got wrong is a `larft.errors.UserError`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from larft.errors import UserError

_field = dataclasses.field


def _opt(default: Any = dataclasses.MISSING, help: str = "", **metadata: Any) -> Any:
    """An option: no default means required."""
    return _field(default=default, metadata={"help": help, **metadata})


def _positional(help: str, nargs: str | None = None) -> Any:
    return _field(metadata={"help": help, "positional": True, "nargs": nargs})


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


# -- eval ---------------------------------------------------------------------------------------
@dataclasses.dataclass(kw_only=True)
class EvalArguments:
    """`larft eval`: length-following benchmarks, the counting probe and the retention check."""

    model: str = _opt("default", "'default', an HF id, a local path or a checkpoint")
    bench: list[str] | None = _opt(None, "lifebench, lifebench-label, lifebench-refactor, longwrite-ruler, ruler-tlg, "
                                         "counting, retention (repeatable)", action="extend")
    bench_file: list[str] | None = _opt(None, "a user file of --format (repeatable)", action="extend")
    format: str | None = _opt(None, "format of --bench_file: lifebench, lifebench-refactor, longbench-write, lenctrl")
    out: str = _opt(help="output folder (generations are cached there: rerun to resume)")
    limit: int | None = _opt(None, "at most N prompts per benchmark (a seeded sample)")
    filter: str | None = _opt(None, "e.g. lang=en,control=equal,min_length=16,max_length=256,level=1")
    batch_size: int = _opt(8, "prompts per generation batch")
    max_new_tokens_cap: int = _opt(2048, "the largest budget a prompt may get; a prompt that needs more is listed "
                                         "as budget_limited, not scored")
    counting_own: int = _opt(24, "own generations in the counting probe")
    sample: bool = _opt(False, "sample (default: greedy)")
    temperature: float = _opt(0.7, "sampling temperature")
    top_p: float = _opt(0.8, "sampling top-p")
    seed: int = _opt(0, "seed of sampling, of --limit's sample and of the bootstrap")
    best_of: int = _opt(1, "best-of-N: sample N answers per length prompt (--temperature, --top_p, --seed) and score "
                           "the one with the highest length reward; results record N and gen_tokens_per_prompt",
                        metavar="N")
    trust_remote_code: bool = _opt(False, "run the model repository's own code (transformers' trust_remote_code)")
    device: str = _opt("auto", "auto (CUDA when present), cpu, cuda or cuda:N")
    dtype: str = _opt("auto", "auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16")
    tokens_per_word: float | None = _opt(None, "the model's tokens per word, from which each prompt's score-neutral "
                                               "budget is sized (default: measured on its tokenizer)")
    system_prompt: str = _opt("default", "system message before every prompt: default (the chat template's own), none "
                                         "(an empty one), short, or your own text")
    chat_template_kwargs: str | None = _opt(None, 'JSON passed to the chat template, e.g. \'{"enable_thinking": false}\'')
    reasoning_delimiters: str = _opt("<think>,</think>", "reasoning block 'start,end' pairs (';'-separated, or none): "
                                                         "only the answer is counted")
    backend: str = _opt("hf", "generation engine: hf (transformers), ct2 (CTranslate2, CPU, fp32; pip install "
                              "'larft[ct2]') or vllm (pip install 'larft[vllm]', GPU); same per-prompt budgets and records")
    bootstrap: int = _opt(1000, "resamples for the 95%% bootstrap intervals")
    lm_eval_tasks: str | None = _opt(None, "also run lm-evaluation-harness tasks (comma-separated; needs lm-eval and "
                                           "its datasets)")
    lm_eval_include_path: str | None = _opt(None, "a folder of lm-eval task YAMLs (e.g. tasks over local files)")

    def __post_init__(self) -> None:
        if self.bench_file and not self.format:
            raise UserError("--bench-file needs --format (lifebench, lifebench-refactor, longbench-write or lenctrl)")
        self.settings = self.eval_settings()  # every other value checked here, before anything is read

    def eval_settings(self) -> Any:
        from larft.eval.registry import parse_filters
        from larft.eval.settings import EvalSettings

        return EvalSettings(
            batch_size=self.batch_size, max_new_tokens_cap=self.max_new_tokens_cap, do_sample=self.sample,
            temperature=self.temperature, top_p=self.top_p, seed=self.seed, limit=self.limit,
            filters=parse_filters(self.filter), counting_own=self.counting_own, device=self.device, dtype=self.dtype,
            chat_template_kwargs=json_object(self.chat_template_kwargs, "--chat-template-kwargs"),
            reasoning_delimiters=self.reasoning_delimiters, bootstrap=self.bootstrap,
            tokens_per_word=self.tokens_per_word, backend=self.backend, best_of=self.best_of,
            system_prompt=self.system_prompt,
        )

    @property
    def bench_files(self) -> list[tuple[str, str]]:
        return [(path, self.format) for path in self.bench_file or []]

    @property
    def lm_eval_task_list(self) -> list[str] | None:
        return _csv(self.lm_eval_tasks) if self.lm_eval_tasks else None


def json_object(text: str | dict | None, option: str) -> dict | None:
    """A JSON object option (a YAML config may give the mapping itself)."""
    if not text:
        return None
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{option}: not valid JSON ({e.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise UserError(f"{option}: expected a JSON object like '{{\"enable_thinking\": false}}', got {text!r}")
    return value


# -- generate -----------------------------------------------------------------------------------
GENERATE_CONSTRAINTS = ("at_least", "at_most", "equal")


@dataclasses.dataclass(kw_only=True)
class GenerateArguments:
    """`larft generate`: answer one prompt, with a length instruction when a target is given."""

    model: str = _opt("default", "'default' (bundled SmolLM2-135M-Instruct), an HF id or a local path")
    prompt: str = _opt(help="the prompt")
    words: int | None = _opt(None, "target length in words")
    chars: int | None = _opt(None, "target length in non-space characters")
    constraint: str = _opt("equal", "how the target is asked for", choices=GENERATE_CONSTRAINTS)
    max_new_tokens: int | None = _opt(None, "the budget (default: room to reach the length where a cut answer "
                                            "scores ~0; 256 without a target)")
    system_prompt: str = _opt("default", "system message: default (the chat template's own), none (an empty one), "
                                         "short, or your own text")
    n: int = _opt(1, "number of samples")
    sample: bool = _opt(False, "sample instead of greedy decoding")
    best_of: int = _opt(1, "sample N answers and print the one with the highest length reward (ties: the first); "
                           "needs --words or --chars", metavar="N")
    temperature: float = _opt(0.7, "sampling temperature")
    top_p: float = _opt(0.8, "sampling top-p")
    device: str = _opt("auto", "auto (CUDA when present), cpu, cuda or cuda:N")
    dtype: str = _opt("auto", "auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16")
    backend: str = _opt("hf", "generation engine: hf (transformers) or ct2 (CTranslate2, CPU, fp32; pip install "
                              "'larft[ct2]')")

    def __post_init__(self) -> None:
        from larft.models import check_device

        if self.best_of < 1:
            raise UserError(f"--best-of must be >= 1, got {self.best_of}")
        if self.best_of > 1 and not self.target:
            raise UserError("--best-of needs a length target to pick by: give --words N or --chars N")
        check_device(self.device, self.dtype)
        if self.backend not in ("hf", "ct2"):
            raise UserError(f"--backend: unknown value {self.backend!r}; expected hf or ct2")
        if self.backend == "ct2":
            from larft.ct2_engine import require_ctranslate2

            try:
                require_ctranslate2()
            except RuntimeError as err:
                raise UserError(str(err)) from None

    @property
    def unit(self) -> str:
        return "chars" if self.chars else "words"

    @property
    def target(self) -> int | None:
        return self.chars if self.chars else self.words


# -- data ---------------------------------------------------------------------------------------
@dataclasses.dataclass(kw_only=True)
class DataGenerateArguments:
    """`larft data generate`: length-constrained prompts (official LARFT JSONL shape)."""

    out: str = _opt(help="output .jsonl or .parquet")
    n: int = _opt(256, "number of prompts")
    seed: int = _opt(0, "seed of the draw")
    targets: str = _opt("16,32,64,128,256,512", "comma-separated target lengths (default: the lengths people ask for)")
    constraints: str = _opt("equal,at_most,at_least", "equal,at_most,at_least,range")
    units: str = _opt("words", "words,chars,tokens")
    styles: str = _opt("plain,requirement", "plain,requirement (prompt phrasings)")

    def __post_init__(self) -> None:
        try:
            targets = self.targets if isinstance(self.targets, str) else ",".join(map(str, self.targets))  # YAML list
            self.target_list = [int(t) for t in _csv(targets)]
        except ValueError:
            raise UserError(f"--targets must be comma-separated integers, got {self.targets!r}") from None


@dataclasses.dataclass(kw_only=True)
class DataConvertArguments:
    """`larft data convert SRC DST`: JSONL <-> Parquet (official LARFT format accepted)."""

    src: str = _positional("the file to read")
    dst: str = _positional("the file to write (.jsonl or .parquet)")


@dataclasses.dataclass(kw_only=True)
class DataValidateArguments:
    """`larft data validate FILE...`: report every problem as file:line: field: message."""

    files: list[str] = _positional("prompt files", nargs="+")
    require_target: bool = _opt(True, "a row without a length target is a problem (false: rows your own reward "
                                      "functions score, as `larft train --reward_funcs` accepts them)")


# -- report -------------------------------------------------------------------------------------
@dataclasses.dataclass(kw_only=True)
class ReportArguments:
    """`larft report DIR...`: compare several `larft eval --out` folders side by side."""

    dirs: list[str] = _positional("`larft eval --out` folders", nargs="+")
    out: str = _opt(help="output folder of the comparison")
    names: str | None = _opt(None, "comma-separated run names (default: folder names)")

    @property
    def name_list(self) -> list[str] | None:
        return _csv(self.names) if self.names else None


# -- parsing ------------------------------------------------------------------------------------
def _parser(cls: type, prog: str) -> Any:
    from trl import TrlParser

    class OptionsParser(TrlParser):
        """TRL's parser, plus positional fields (`metadata["positional"]`)."""

        @staticmethod
        def _parse_dataclass_field(parser: Any, field: dataclasses.Field) -> None:
            if field.metadata.get("positional"):
                parser.add_argument(field.name, nargs=field.metadata.get("nargs"), help=field.metadata.get("help"))
            else:
                TrlParser._parse_dataclass_field(parser, field)

    return OptionsParser(cls, prog=prog, description=cls.__doc__, allow_abbrev=False)


def parse_options(cls: type, argv: list[str], prog: str) -> Any:
    """The dataclass of a command from its command line (and `--config FILE.yaml`): unknown options
    and config keys are a UserError; a malformed value is argparse's error (exit 2)."""
    argv = list(argv)
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise UserError("--config needs a YAML file")
        _check_config(argv[i + 1])
    parser = _parser(cls, prog)
    options, config_rest, rest = parser.parse_args_and_config(argv, return_remaining_strings=True,
                                                              separate_remaining_strings=True)
    if config_rest:
        keys = [option[2:] for option in config_rest[::2]]
        raise UserError(f"config file: unknown key{'s' if len(keys) > 1 else ''} {', '.join(map(repr, keys))} "
                        f"(see `{prog} --help`)")
    if rest:
        raise UserError(f"unknown option(s): {' '.join(rest)} (see `{prog} --help`)")
    return options


def _check_config(path: str) -> None:
    import yaml

    if not Path(path).is_file():
        raise UserError(f"config file {path}: not found")
    try:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"config file {path}: not valid YAML: {e}") from None
    if not isinstance(config, dict):
        raise UserError(f"config file {path}: must be a mapping of option: value")
