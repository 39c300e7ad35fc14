"""`larft train`, top to bottom: data -> model -> LARFTTrainer -> checkpoints and metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from larft.callbacks import LengthCheckCallback, MetricsJsonlCallback
from larft.config import LARFTConfig
from larft.data import generate_rows, load_rows, normalize_record


def training_rows(train_args: Any) -> list[dict[str, Any]]:
    """Rows from the user's file (validated), or a generated prompt set."""
    if train_args.train_file:
        return load_rows(train_args.train_file, skip_invalid=train_args.skip_invalid)
    targets = [int(t) for t in str(train_args.train_targets).split(",") if t.strip()]
    constraints = [c.strip() for c in str(train_args.train_constraints).split(",") if c.strip()]
    generated = generate_rows(train_args.train_size, targets=targets, constraints=constraints, seed=0)
    return [normalize_record(r, "<generated>", i)[0] for i, r in enumerate(generated, start=1)]


def train(train_args: Any, config: LARFTConfig) -> Path:
    from datasets import Dataset
    from transformers.trainer_utils import get_last_checkpoint

    from larft.malloc import tune_malloc
    from larft.models import load_tokenizer, resolve_model
    from larft.trainer import LARFTTrainer

    tune_malloc()
    output_dir = Path(config.output_dir)
    checkpoint = None
    if train_args.resume:
        checkpoint = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
        if checkpoint is None:
            raise ValueError(f"--resume: no checkpoint-* folder in {output_dir}")
    elif (output_dir / "metrics.jsonl").exists():
        raise ValueError(
            f"{output_dir} already holds a run (metrics.jsonl); pass --resume to continue it "
            "or choose another --output_dir"
        )

    rows = training_rows(train_args)
    check_rows: list[dict[str, Any]] = []
    if config.length_check_prompts > 0:  # held out: never trained on
        if config.length_check_prompts >= len(rows):
            raise ValueError(f"length_check_prompts={config.length_check_prompts} leaves no training rows")
        check_rows, rows = rows[-config.length_check_prompts :], rows[: -config.length_check_prompts]

    model_path = resolve_model(train_args.model)
    tokenizer = load_tokenizer(model_path, trust_remote_code=config.trust_remote_code)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "larft_run.json").write_text(
        json.dumps({"model": train_args.model, "model_path": model_path, "train_rows": len(rows)}, indent=2)
    )
    callbacks = [MetricsJsonlCallback(output_dir)]
    if check_rows:
        callbacks.append(LengthCheckCallback(check_rows, tokenizer, config.max_completion_length, str(output_dir)))
    trainer = LARFTTrainer(
        model=model_path,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(output_dir))
    print(f"[larft] model saved to {output_dir} (metrics: {output_dir / 'metrics.jsonl'})")
    return output_dir
