"""Preparing a training run, the same for LARFT (`larft.train`) and the baselines (`larft.baselines`):
output_dir (new, or resumed from its newest complete checkpoint), the prompt rows and their held-out
split, the system prompt, the run record (larft_run.json), the tokenizer, the prompt-length check,
the length check, and, for runs without a TRL Trainer of their own, the Hub repo and upload.

`prepare_run` returns a `RunSetup`; each method then trains on `setup.rows`. LARFT's model card and
`--push_to_hub` are transformers' Trainer's own (`LARFTTrainer.create_model_card`, `save_model`);
`hub_repo` and `push_output` do the same for the baselines, as the Trainer does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from larft.data import generate_rows
from larft.errors import UserError
from larft.loader import DataError, DataIssue, load_rows, normalize_record
from larft.logs import get_logger

logger = get_logger(__name__)

#: the file of output_dir that records a run (model, rows, held-out split); a resumed run reads it
RUN_RECORD = "larft_run.json"


# -- the prompt rows ------------------------------------------------------------------------
def training_rows(train_args: Any, require_target: bool = True) -> list[dict[str, Any]]:
    """Rows of --dataset_name / --train_file (`larft.loader`), or a generated prompt set. Rows without
    a length target are accepted only when `require_target` is off (reward functions of yours score them)."""
    source = train_args.dataset_name or train_args.train_file
    if source:
        return load_rows(source, config=train_args.dataset_config, split=train_args.dataset_train_split,
                         skip_invalid=train_args.skip_invalid, require_target=require_target)
    targets = [int(t) for t in str(train_args.train_targets).split(",") if t.strip()]
    constraints = [c.strip() for c in str(train_args.train_constraints).split(",") if c.strip()]
    styles = [c.strip() for c in str(train_args.train_styles).split(",") if c.strip()]
    generated = generate_rows(train_args.train_size, targets=targets, constraints=constraints, seed=0, styles=styles)
    return [normalize_record(r, "<generated>", i)[0] for i, r in enumerate(generated, start=1)]


def with_system_prompts(rows: list[dict[str, Any]], system_prompt: str) -> list[dict[str, Any]]:
    """Rows whose chat prompts carry the run's system message (`generation.with_system_prompt`)."""
    from larft.generation import with_system_prompt

    return [{**r, "prompt": with_system_prompt(r["prompt"], system_prompt)} for r in rows]


#: what a row's length instruction is (normalize_record's fields): the fingerprint of a prompt set
FINGERPRINT_KEYS = ("prompt", "target", "target_range", "constraint", "unit")


def rows_fingerprint(rows: list[dict[str, Any]]) -> str:
    """A hash of the prompt set in its order: a resumed run must see the same rows. Only the
    length instructions count (a run started before extra columns were kept resumes)."""
    import hashlib

    ordered = sorted(rows, key=lambda r: r["_index"])
    body = json.dumps([{k: r[k] for k in FINGERPRINT_KEYS if k in r} for r in ordered], sort_keys=True, default=str)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()[:16]


def held_out_positions(rows: Iterable[Mapping[str, Any]], n: int) -> list[int]:
    """Which rows the length check holds out: the last `n` that have a length target (rows that only
    your own reward functions score are not checked), by position. The same rule for `LARFTTrainer`,
    the baselines and a resumed run, so a run never trains on its held-out prompts."""
    from larft.length_spec import LengthSpec

    if n <= 0:
        return []
    targeted = [i for i, row in enumerate(rows) if LengthSpec.of(row).has_target]
    if not targeted:
        return []
    if n >= len(targeted):
        raise UserError(f"length_check_prompts={n} leaves no training rows with a length target "
                        f"({len(targeted)} rows have one)")
    return targeted[-n:]


def split_held_out(rows: list[dict[str, Any]], n: int, run_file: Path, resuming: bool) -> tuple[list, list]:
    """(training rows, held-out rows for the length check) by `held_out_positions`, recorded (indices and
    a fingerprint of the prompt set) in larft_run.json; a resumed run checks it holds out the same rows."""
    for i, row in enumerate(rows):
        row["_index"] = i
    held = set(held_out_positions(rows, n))
    check_resumed_split(run_file, rows, held, resuming)
    return [r for r in rows if r["_index"] not in held], [r for r in rows if r["_index"] in held]


def check_resumed_split(run_file: Path, rows: list[dict[str, Any]], held: set[int], resuming: bool) -> None:
    """A resumed run sees the prompt set it started with and holds out the same rows, or a UserError says
    what changed."""
    if not (resuming and run_file.exists()):
        return
    saved = json.loads(run_file.read_text(encoding="utf-8"))
    if "rows_fingerprint" not in saved:
        return
    if saved["rows_fingerprint"] != rows_fingerprint(rows):
        raise UserError(f"--resume: the training prompts differ from those the run in {run_file.parent} "
                        "started with (same --train_file / train_size / train_targets needed)")
    if set(saved.get("held_out", [])) != held:
        raise UserError(f"--resume: the run in {run_file.parent} held out {len(saved.get('held_out', []))} prompts "
                        f"for the length check, this one would hold out {len(held)} (same --length_check_prompts "
                        "needed)")


# -- checks before any model is loaded --------------------------------------------------------
def check_prompt_lengths(rows: list[dict[str, Any]], tokenizer: Any, max_tokens: int | None, source: str) -> None:
    """Every prompt fits `max_tokens` once the chat template is applied, or a DataError names them."""
    if not max_tokens:
        return
    from larft.generation import prompt_length

    issues = []
    for row in rows:
        n = prompt_length(tokenizer, row["prompt"])
        if n > max_tokens:
            issues.append(DataIssue(row.get("_source", source), row.get("line", 0), "prompt",
                                    f"{n} tokens, above max_prompt_tokens={max_tokens}"))
    if issues:
        raise DataError(issues)


def check_completion_budget(rows: Iterable[Mapping[str, Any]], tokenizer: Any, config: Any) -> None:
    """Say so when max_completion_length cuts rollouts before 2x their target (`larft.budget`): a
    rollout cut there has a known reward; one cut earlier is scored 0 as if it had run on."""
    from larft.budget import training_budget
    from larft.length_spec import LengthSpec

    specs = [LengthSpec.of(r) for r in rows]
    targets = [s.largest for s in specs if s.has_target and s.unit == "words"]
    if not targets or config.mask_truncated_completions:
        return
    need = training_budget(max(targets), tokenizer)
    if config.max_completion_length < need and config.process_index == 0:
        logger.warning(f"max_completion_length={config.max_completion_length} cuts rollouts before 2x the largest "
                       f"target ({max(targets)} words, ~{need} tokens): a cut rollout is scored as one that ran on "
                       f"(0 for equal / at_most). Set max_completion_length >= {need}, or mask_truncated_completions: "
                       "true")


def model_init_kwargs(train_args: Any, config: Any) -> dict[str, Any]:
    """How TRL loads the policy and reference model: ModelConfig's dtype, revision and attention
    implementation, under the user's own --model_init_kwargs (which win, as in TRL's grpo script)."""
    kwargs: dict[str, Any] = {"dtype": getattr(train_args, "dtype", None) or "float32"}
    if getattr(train_args, "model_revision", "main") != "main":
        kwargs["revision"] = train_args.model_revision
    if getattr(train_args, "attn_implementation", None):
        kwargs["attn_implementation"] = train_args.attn_implementation
    user = config.model_init_kwargs
    if isinstance(user, str):
        user = json.loads(user)
    return {**kwargs, **(user or {})}


# -- output_dir: a new run, or a resumed one -------------------------------------------------
def complete_checkpoints(output_dir: Path, processes: int = 1) -> list[Path]:
    """checkpoint-N folders that were fully written, newest first: trainer_state.json (the main process
    writes it last) and, from a run on several processes, every process's rng_state_I.pth, which each
    process writes itself, unordered with the main process's files: a run killed between the two would
    resume with a fresh random state on some rank, and so with other rollouts."""
    found = []
    for path in output_dir.glob("checkpoint-*"):
        suffix = path.name.split("-")[-1]
        if not suffix.isdigit():
            continue
        state = path / "trainer_state.json"
        try:
            json.loads(state.read_text())
        except (OSError, json.JSONDecodeError):
            logger.warning(f"{path}: incomplete checkpoint (no valid trainer_state.json), not used")
            continue
        missing = [f"rng_state_{i}.pth" for i in range(processes) if processes > 1
                   and not (path / f"rng_state_{i}.pth").exists()]
        if missing:
            logger.warning(f"{path}: incomplete checkpoint ({', '.join(missing)} missing), not used")
            continue
        found.append((int(suffix), path))
    return [p for _, p in sorted(found, reverse=True)]


def start_output_dir(output_dir: Path, *, resume: bool, resumable: bool = True, processes: int = 1) -> Path | None:
    """The checkpoint a `--resume` run continues from, or None for a new run; a new run refuses an output_dir
    that already holds one. Nothing is written: the trainer trims metrics.jsonl and rollouts.jsonl to the
    checkpoint's step when training starts (`callbacks.ResumedStepFiles`)."""
    if resume:
        found = complete_checkpoints(output_dir, processes) if output_dir.is_dir() else []
        if not found:
            raise UserError(f"--resume: no complete checkpoint-* folder in {output_dir}")
        checkpoint = found[0]
        step = json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]
        logger.info(f"resuming from {checkpoint} (step {step})")
        return checkpoint
    if (output_dir / "metrics.jsonl").exists():
        hint = "pass --resume to continue it or choose another --output_dir" if resumable else \
            "choose another --output_dir"
        raise UserError(f"{output_dir} already holds a run (metrics.jsonl); {hint}")
    return None


def write_json(path: Path, data: Any) -> None:
    """`data` as indented JSON, written whole (a temporary file renamed over `path`)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)


# -- the prepared run --------------------------------------------------------------------------
@dataclass
class RunSetup:
    """What every training method starts from (`prepare_run`)."""

    rows: list[dict[str, Any]]  # training rows, the run's system prompt applied (hold_out off: every row as given)
    check_rows: list[dict[str, Any]]  # held-out rows of the length check (none: no check)
    tokenizer: Any
    model_path: str  # what is loaded (`models.resolve_model` of --model)
    init_kwargs: dict[str, Any]  # how it is loaded (`model_init_kwargs`)
    output_dir: Path
    fingerprint: str  # of the prompt set as given (`rows_fingerprint`)
    source: str | None  # --dataset_name / --train_file, or None for generated prompts
    checkpoint: Path | None = None  # the checkpoint a resumed run continues from

    @property
    def hub_dataset(self) -> str | None:
        """The Hub dataset id the prompts came from (for the model card), or None for a local file or
        generated prompts."""
        return self.source if self.source and not Path(self.source).expanduser().exists() else None

    def write_record(self, train_args: Any, config: Any, **extra: Any) -> None:
        """output_dir/larft_run.json: the model, the prompt set and its held-out split (what `--resume`
        restores), plus the method's own `extra` entries. Written by the main process only."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if config.process_index == 0:  # one writer: ranks racing on the same temp file lose a rename
            write_json(self.output_dir / RUN_RECORD, {
                "model": train_args.model, "model_path": self.model_path,
                "train_rows": len({r["_index"] for r in self.rows} - {r["_index"] for r in self.check_rows}),
                "train_file": self.source, "rows_fingerprint": self.fingerprint,
                "held_out": [r["_index"] for r in self.check_rows], **extra,
            })

    def length_check(self, config: Any) -> Any:
        """The before/after length check on the held-out rows (`callbacks.LengthCheckCallback`), or None
        when none are held out."""
        if not self.check_rows:
            return None
        from larft.callbacks import LengthCheckCallback
        from larft.length import parse_delimiters

        return LengthCheckCallback(self.check_rows, self.tokenizer, None, str(self.output_dir),
                                   config.chat_template_kwargs, parse_delimiters(config.reasoning_delimiters))


def prepare_run(train_args: Any, config: Any, *, resumable: bool = True, hold_out: bool = True) -> RunSetup:
    """output_dir checked (or its run resumed), the prompt rows read and split, the system prompt
    applied, the tokenizer loaded and every prompt checked against --max_prompt_tokens: everything
    that can fail on the user's input, before any model is loaded. Nothing is written yet
    (`RunSetup.write_record`). With `hold_out` off (LARFT: `LARFTTrainer` holds out the length check's
    rows and applies the system prompt itself, from its LARFTConfig) `rows` are all the rows as given,
    `check_rows` the ones the trainer will hold out, and the system prompt is only used for the check
    of prompt lengths."""
    from larft.models import load_tokenizer, resolve_model

    output_dir = Path(config.output_dir)
    checkpoint = start_output_dir(output_dir, resume=bool(getattr(train_args, "resume", False)) and resumable,
                                  resumable=resumable, processes=config.world_size)
    rows = training_rows(train_args, require_target=not getattr(train_args, "reward_funcs", None))
    given = rows
    rows, check_rows = split_held_out(rows, config.length_check_prompts, output_dir / RUN_RECORD,
                                      resuming=checkpoint is not None)
    fingerprint = rows_fingerprint(rows + check_rows)  # of the prompt set as given: the system prompt is a setting
    if hold_out:
        rows, check_rows = (with_system_prompts(r, config.system_prompt) for r in (rows, check_rows))
    else:
        rows = given

    source = getattr(train_args, "dataset_name", None) or train_args.train_file
    model_path = resolve_model(train_args.model)
    init_kwargs = model_init_kwargs(train_args, config)
    tokenizer = load_tokenizer(model_path, trust_remote_code=config.trust_remote_code,
                               revision=init_kwargs.get("revision"))
    check_prompt_lengths(rows if hold_out else with_system_prompts(rows, config.system_prompt), tokenizer,
                         train_args.max_prompt_tokens, source or "<generated>")
    return RunSetup(rows=rows, check_rows=check_rows, tokenizer=tokenizer, model_path=model_path,
                    init_kwargs=init_kwargs, output_dir=output_dir, fingerprint=fingerprint, source=source,
                    checkpoint=checkpoint)


# -- the Hub, for runs without a Trainer of their own ------------------------------------------
def hub_repo(config: Any) -> str | None:
    """With --push_to_hub: the run's Hub repo, created when missing, as transformers' Trainer creates
    it (--hub_model_id, else the name of output_dir; --hub_private_repo, --hub_token). None without."""
    if not config.push_to_hub:
        return None
    from transformers.utils.hub import hf_api

    name = config.hub_model_id or Path(config.output_dir).absolute().name
    return hf_api().create_repo(name, token=config.hub_token, private=config.hub_private_repo, exist_ok=True).repo_id


def push_output(config: Any, repo_id: str) -> None:
    """Upload output_dir (model, tokenizer, card, metrics; not checkpoints) to `repo_id`, as
    transformers' Trainer.push_to_hub does at the end of training."""
    from transformers.utils.hub import hf_api

    hf_api().upload_folder(repo_id=repo_id, folder_path=str(config.output_dir), commit_message="End of training",
                           token=config.hub_token, revision=config.hub_revision,
                           ignore_patterns=["_*", "checkpoint-*"])
    logger.info(f"pushed {config.output_dir} to {repo_id}")


__all__ = ["FINGERPRINT_KEYS", "RUN_RECORD", "RunSetup", "check_completion_budget", "check_prompt_lengths",
           "check_resumed_split", "complete_checkpoints", "held_out_positions", "hub_repo", "model_init_kwargs", "prepare_run", "push_output", "rows_fingerprint",
           "split_held_out", "start_output_dir", "training_rows", "with_system_prompts",
           "write_json"]
