"""`larft train`, top to bottom: data -> model -> LARFTTrainer -> checkpoints and metrics."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from larft.callbacks import LengthCheckCallback, MetricsJsonlCallback
from larft.config import LARFTConfig
from larft.data import DataError, DataIssue, generate_rows, load_dataset_rows, normalize_record
from larft.interrupt import GracefulStopCallback, TrainingInterrupted
from larft.length import parse_delimiters


class TrainingFailed(RuntimeError):
    """A numerical fault stopped training; the message names the step and the last good checkpoint."""


def training_rows(train_args: Any) -> list[dict[str, Any]]:
    """Rows of --dataset_name / --train_file (read by `datasets`, validated), or a generated prompt set."""
    source = train_args.dataset_name or train_args.train_file
    if source:
        return load_dataset_rows(source, config=train_args.dataset_config, split=train_args.dataset_train_split,
                                 skip_invalid=train_args.skip_invalid)
    targets = [int(t) for t in str(train_args.train_targets).split(",") if t.strip()]
    constraints = [c.strip() for c in str(train_args.train_constraints).split(",") if c.strip()]
    styles = [c.strip() for c in str(train_args.train_styles).split(",") if c.strip()]
    generated = generate_rows(train_args.train_size, targets=targets, constraints=constraints, seed=0, styles=styles)
    return [normalize_record(r, "<generated>", i)[0] for i, r in enumerate(generated, start=1)]


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


def check_completion_budget(rows: list[dict[str, Any]], tokenizer: Any, config: LARFTConfig) -> None:
    """Say so when max_completion_length cuts rollouts before 2x their target (`larft.budget`): a
    rollout cut there has a known reward; one cut earlier is scored 0 as if it had run on."""
    from larft.budget import training_budget
    from larft.rewards import row_target

    targets = [row_target(r) for r in rows if (r.get("unit") or "words") == "words"]
    targets = [max(t) if isinstance(t, tuple) else t for t in targets if t is not None]
    if not targets or config.mask_truncated_completions:
        return
    need = training_budget(max(targets), tokenizer)
    if config.max_completion_length < need and config.process_index == 0:
        print(f"[larft] max_completion_length={config.max_completion_length} cuts rollouts before 2x the largest "
              f"target ({max(targets)} words, ~{need} tokens): a cut rollout is scored as one that ran on "
              f"(0 for equal / at_most). Set max_completion_length >= {need}, or mask_truncated_completions: true")


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


def split_held_out(rows: list[dict[str, Any]], n: int, run_file: Path, resuming: bool) -> tuple[list, list]:
    """(training rows, held-out rows for the length check). A new run holds out the last `n`
    rows and records them (indices and a fingerprint of the prompt set) in larft_run.json; a
    resumed run restores exactly that split, so it never trains on its held-out prompts."""
    for i, row in enumerate(rows):
        row["_index"] = i
    if resuming and run_file.exists():
        saved = json.loads(run_file.read_text(encoding="utf-8"))
        if "rows_fingerprint" in saved:
            if saved["rows_fingerprint"] != rows_fingerprint(rows):
                raise ValueError(f"--resume: the training prompts differ from those the run in {run_file.parent} "
                                 "started with (same --train_file / train_size / train_targets needed)")
            held = set(saved.get("held_out", []))
            return [r for r in rows if r["_index"] not in held], [r for r in rows if r["_index"] in held]
    if n <= 0:
        return rows, []
    if n >= len(rows):
        raise ValueError(f"length_check_prompts={n} leaves no training rows")
    return rows[:-n], rows[-n:]


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """checkpoint-N folders that were fully written (trainer_state.json comes last), newest first."""
    found = []
    for path in output_dir.glob("checkpoint-*"):
        suffix = path.name.split("-")[-1]
        if not suffix.isdigit():
            continue
        state = path / "trainer_state.json"
        try:
            json.loads(state.read_text())
        except (OSError, json.JSONDecodeError):
            print(f"[larft] {path}: incomplete checkpoint (no valid trainer_state.json), not used", file=sys.stderr)
            continue
        found.append((int(suffix), path))
    return [p for _, p in sorted(found, reverse=True)]


def trim_metrics(path: Path, last_step: int) -> None:
    """Keep metrics lines up to the checkpoint's step: the steps after it are trained again."""
    if not path.exists():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and _step_of(line) is not None and _step_of(line) <= last_step]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(tmp, path)


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None  # a line cut by a kill: that step is trained again


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def lora_config(train_args: Any) -> Any:
    """TRL's LoraConfig from the ModelConfig options (lora_r, lora_alpha, ...), or None without LoRA."""
    if not getattr(train_args, "use_peft", False):
        return None
    import importlib.util

    if importlib.util.find_spec("peft") is None:
        raise ValueError("LoRA (--use_peft / --lora_r) needs PEFT: pip install 'larft[peft]'")
    from trl import get_peft_config

    return get_peft_config(train_args)


def quantization_config(train_args: Any) -> Any:
    """TRL's BitsAndBytesConfig for --load_in_4bit / --load_in_8bit (QLoRA), or None. bitsandbytes
    quantizes on CUDA only: without a GPU or the package this is one clear error, before any data
    or model is loaded."""
    bits = 4 if getattr(train_args, "load_in_4bit", False) else 8 if getattr(train_args, "load_in_8bit", False) else 0
    if not bits:
        return None
    import importlib.util

    import torch

    missing = [what for what, ok in (("a CUDA GPU", torch.cuda.is_available()),
                                     ("bitsandbytes", importlib.util.find_spec("bitsandbytes") is not None)) if not ok]
    if missing:
        raise ValueError(f"--load_in_{bits}bit (QLoRA) needs a CUDA GPU and `pip install bitsandbytes`; missing "
                         f"here: {' and '.join(missing)}")
    from trl import get_quantization_config

    return get_quantization_config(train_args)


def model_init_kwargs(train_args: Any, config: LARFTConfig) -> dict[str, Any]:
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


def reward_functions(paths: list[str] | None) -> list[Any]:
    """The `--reward_funcs` dotted paths (module.function), imported; the current folder is
    importable (as in TRL's grpo script). A path that does not import or names no callable is
    one clear error, before any model is loaded."""
    import importlib

    funcs = []
    if paths and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for path in paths or []:
        module_name, _, attr = path.rpartition(".")
        if not module_name:
            raise ValueError(f"--reward_funcs {path}: expected a dotted path module.function, e.g. my_rewards.brevity")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            raise ValueError(f"--reward_funcs {path}: cannot import module {module_name!r} ({e}); run from the folder "
                             "that holds it or put it on PYTHONPATH") from None
        except Exception as e:  # the module itself failed: show why, with --debug for its traceback
            raise ValueError(f"--reward_funcs {path}: importing {module_name!r} failed: {type(e).__name__}: {e}") from e
        func = getattr(module, attr, None)
        if func is None:
            raise ValueError(f"--reward_funcs {path}: module {module_name!r} has no attribute {attr!r}")
        if not callable(func):
            raise ValueError(f"--reward_funcs {path}: {type(func).__name__} is not callable (expected a function "
                             "f(prompts, completions, **columns) -> list of float)")
        funcs.append(func)
    return funcs


def train(train_args: Any, config: LARFTConfig, extra_callbacks: list | None = None) -> Path:
    if getattr(train_args, "method", "larft") != "larft":  # --method rft / hir / dpo: the baselines, same data and outputs
        if extra_callbacks:
            raise ValueError(f"--method {train_args.method} runs no Trainer callbacks of yours")
        from larft.baselines import train_baseline

        return train_baseline(train_args, config)
    from datasets import Dataset

    from larft.malloc import tune_malloc
    from larft.models import load_tokenizer, resolve_model
    from larft.trainer import LARFTTrainer

    tune_malloc()
    quantization = quantization_config(train_args)  # user errors first: before data, model or output_dir
    reward_funcs = reward_functions(getattr(train_args, "reward_funcs", None))
    output_dir = Path(config.output_dir)
    if config.resume_from_checkpoint:
        raise ValueError("--resume_from_checkpoint is not how larft resumes: pass --resume true with the same "
                         "--output_dir; it continues from the newest complete checkpoint there, with its held-out "
                         "split and metrics")
    checkpoint = None
    if train_args.resume:
        found = complete_checkpoints(output_dir) if output_dir.is_dir() else []
        if not found:
            raise ValueError(f"--resume: no complete checkpoint-* folder in {output_dir}")
        checkpoint = found[0]
        step = json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]
        if config.process_index == 0:  # one writer: ranks racing on the same temp file lose a rename
            trim_metrics(output_dir / "metrics.jsonl", step)
            trim_metrics(output_dir / "rollouts.jsonl", step)
        print(f"[larft] resuming from {checkpoint} (step {step})")
    elif (output_dir / "metrics.jsonl").exists():
        raise ValueError(
            f"{output_dir} already holds a run (metrics.jsonl); pass --resume to continue it "
            "or choose another --output_dir"
        )

    rows = training_rows(train_args)
    rows, check_rows = split_held_out(rows, config.length_check_prompts, output_dir / "larft_run.json",
                                      resuming=checkpoint is not None)
    fingerprint = rows_fingerprint(rows + check_rows)  # of the prompt set as given: the system prompt is a setting
    rows, check_rows = (with_system_prompts(r, config.system_prompt) for r in (rows, check_rows))

    source = getattr(train_args, "dataset_name", None) or train_args.train_file
    model_path = resolve_model(train_args.model)
    init_kwargs = model_init_kwargs(train_args, config)
    config.model_init_kwargs = init_kwargs
    tokenizer = load_tokenizer(model_path, trust_remote_code=config.trust_remote_code,
                               revision=init_kwargs.get("revision"))
    check_prompt_lengths(rows, tokenizer, train_args.max_prompt_tokens, source or "<generated>")
    check_completion_budget(rows, tokenizer, config)
    output_dir.mkdir(parents=True, exist_ok=True)
    if config.process_index == 0:  # one writer: ranks racing on the same temp file lose a rename
        _write_json(output_dir / "larft_run.json", {
            "model": train_args.model, "model_path": model_path, "train_rows": len(rows),
            "train_file": source, "rows_fingerprint": fingerprint,
            "held_out": [r["_index"] for r in check_rows],
        })
    stop = GracefulStopCallback()
    callbacks = [MetricsJsonlCallback(output_dir), stop]
    check = LengthCheckCallback(check_rows, tokenizer, None, str(output_dir),
                                config.chat_template_kwargs, parse_delimiters(config.reasoning_delimiters)) if check_rows else None
    if check:
        callbacks.append(check)
    callbacks += extra_callbacks or []
    columns = list(dict.fromkeys(k for r in rows for k in r if k not in ("line", "_index", "_source")))
    trainer = LARFTTrainer(
        model=model_path,
        reward_funcs=reward_funcs or None,
        args=config,
        train_dataset=Dataset.from_list([{k: r.get(k) for k in columns} for r in rows]),
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=lora_config(train_args),
        quantization_config=quantization,
    )
    if source and not Path(source).expanduser().exists():
        trainer.dataset_name = source  # a Hub dataset: the model card links it
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except FloatingPointError as e:
        last = complete_checkpoints(output_dir)
        kept = f"the last good checkpoint is {last[0]}" if last else "no checkpoint had been saved yet"
        raise TrainingFailed(f"{e}; training stopped, {kept}") from None
    if stop.signum is not None:
        last = complete_checkpoints(output_dir)
        raise TrainingInterrupted(stop.signum, trainer.state.global_step, str(last[0]) if last else None)
    if check:  # before saving: the model card shows the "after" lengths
        check.finish(trainer.model)
    merge = bool(getattr(train_args, "use_peft", False) and train_args.merge_lora)
    trainer.merged_subfolder = MERGED_SUBFOLDER if merge else None
    trainer.create_model_card()  # README.md: the LARFT card (push_to_hub rewrites the same one)
    # with LoRA: the adapter (PeftModel.from_pretrained loads it); with --push_to_hub, transformers
    # uploads output_dir (model, card, metrics; not checkpoints) to hub_model_id here
    trainer.save_model(str(output_dir))
    if merge and trainer.accelerator.is_main_process:
        merged = merged_model(trainer, output_dir, model_path, init_kwargs, quantization)
        merged.save_pretrained(output_dir / MERGED_SUBFOLDER)
        tokenizer.save_pretrained(output_dir / MERGED_SUBFOLDER)
        print(f"[larft] merged LoRA model saved to {output_dir / MERGED_SUBFOLDER}")
        if config.push_to_hub:
            push_merged(trainer, output_dir / MERGED_SUBFOLDER)
    if trainer.accelerator.is_main_process:
        print(f"[larft] model saved to {output_dir} (metrics: {output_dir / 'metrics.jsonl'})")
    return output_dir


#: where the merged LoRA model goes, in output_dir and in the Hub repo
MERGED_SUBFOLDER = "merged"


def merged_model(trainer: Any, output_dir: Path, model_path: str, init_kwargs: dict[str, Any], quantization: Any) -> Any:
    """The LoRA adapter merged into its base model. With a quantized base (QLoRA) the adapter is
    merged into the base model reloaded unquantized, in its dtype: merging into 4-bit weights would
    round the update away."""
    if quantization is None:
        return trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    kwargs = {k: v for k, v in init_kwargs.items() if k not in ("quantization_config", "device_map")}
    base = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    return PeftModel.from_pretrained(base, output_dir).merge_and_unload()


def push_merged(trainer: Any, folder: Path) -> None:
    """Upload the merged LoRA model to the `merged/` subfolder of the run's Hub repo (beside the
    adapter that transformers' push_to_hub put at the top level): one repo per run."""
    from transformers.utils.hub import hf_api

    hf_api().upload_folder(
        repo_id=trainer.hub_model_id, folder_path=str(folder), path_in_repo=MERGED_SUBFOLDER,
        commit_message="Merged LoRA model", token=trainer.args.hub_token, revision=trainer.args.hub_revision,
    )
    print(f"[larft] merged LoRA model pushed to {trainer.hub_model_id}/{MERGED_SUBFOLDER}")
