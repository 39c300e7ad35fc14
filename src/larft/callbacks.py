"""Trainer callbacks: metrics.jsonl (one JSON object per optimizer step), the console
progress line, and the before/after asked-vs-delivered length check."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from larft.length import DEFAULT_REASONING, measure
from larft.length_spec import LengthSpec
from larft.rewards import length_deviation

#: metric name in metrics.jsonl -> name in the Trainer's logs (TRL's names where it has one)
METRIC_KEYS = {
    "reward_mean": "reward",
    "length_error_mean": "length_error_mean",
    "completion_words_mean": "completion_words_mean",
    "refusal_rate": "refusal_rate",
    "truncated_rate": "truncated_rate",
    "awareness_loss": "awareness_loss",
    "awareness_lambda": "awareness_lambda",
    "awareness_count_error": "awareness_count_error",
    "policy_loss": "policy_loss",
    "kl": "kl",
    "entropy": "entropy",
    "step_seconds": "step_time",
}


def is_step_log(logs: dict[str, Any]) -> bool:
    """A training step's log (not the end-of-training summary nor an evaluation): TRL logs the
    rollout metrics (reward, lengths) only on steps that generated, so with rollout reuse
    (num_iterations > 1) the other steps are known by their loss."""
    return ("loss" in logs or "reward" in logs) and "train_runtime" not in logs


def peak_rss_gb() -> float | None:
    """This process's peak resident memory so far, in GB (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / 1e9 if sys.platform == "darwin" else peak * 1024 / 1e9, 3)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsJsonlCallback(TrainerCallback):
    """Append one line per logged step to OUTPUT_DIR/metrics.jsonl (main process only).

    Each line has every key of METRIC_KEYS (null when the run does not have it, e.g. `kl`
    with beta = 0, the awareness keys with lambda_max = 0, or the rollout metrics on a step that
    reused an earlier step's rollouts), `num_processes`, the main process's `peak_rss_gb` so far
    (where a run's memory peaks), then TRL's raw logs.
    """

    def __init__(self, output_dir: str | os.PathLike):
        self.path = Path(output_dir) / "metrics.jsonl"

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or not is_step_log(logs):
            return
        record = {"step": state.global_step}
        record.update({ours: _clean(logs.get(theirs)) for ours, theirs in METRIC_KEYS.items()})
        record["num_processes"] = args.world_size
        record["peak_rss_gb"] = peak_rss_gb()
        record.update({k: _clean(v) for k, v in logs.items() if k not in record and isinstance(v, (int, float))})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:  # one write of a whole line: append-only
            f.write(json.dumps(record) + "\n")


#: the console line: label -> name in the Trainer's logs
PROGRESS_FIELDS = {
    "reward": "reward",
    "len_err": "length_error_mean",
    "aware": "awareness_loss",
    "lambda": "awareness_lambda",
    "s/step": "step_time",
}


def progress_fields(step: int, logs: dict[str, Any]) -> dict[str, str]:
    """step, reward, length error, awareness loss, lambda and s/step of one logged step, as short strings
    (a field the run does not have, e.g. the awareness loss with lambda_max = 0, is left out)."""
    fields = {"step": str(step)}
    for label, key in PROGRESS_FIELDS.items():
        value = logs.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            fields[label] = f"{value:.2f}" if label == "s/step" else f"{value:.3g}"
    return fields


def _summary(logs: dict[str, Any]) -> str:
    """The end-of-training (or evaluation) log as one readable line."""
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items() if k != "total_flos"]
    return "[larft] " + ", ".join(parts)


class ReleaseMemoryCallback(TrainerCallback):
    """After each optimizer step, the allocator's free pages go back to the OS (`larft.malloc`)."""

    def on_step_end(self, args, state, control, **kwargs):
        from larft.malloc import release_free_memory

        release_free_memory()


class LARFTProgressCallback(ProgressCallback):
    """transformers' tqdm bar, with the step's reward, length error, awareness loss, lambda and
    s/step as its postfix instead of every raw log dict written under it (those still go to
    metrics.jsonl and TensorBoard). LARFTTrainer puts it in place of ProgressCallback."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None or not logs:
            return
        if is_step_log(logs):
            self.training_bar.set_postfix(progress_fields(state.global_step, logs), refresh=True)
        elif "train_runtime" in logs or any(k.startswith("eval_") for k in logs):
            self.training_bar.write(_summary(logs))


class LARFTPrinterCallback(TrainerCallback):
    """With `disable_tqdm` (logs to a file): one readable line per logged step instead of
    transformers' PrinterCallback dicts."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_local_process_zero or not logs:
            return
        if is_step_log(logs):
            fields = progress_fields(state.global_step, logs)
            total = f"/{state.max_steps}" if state.max_steps else ""
            print("[larft] step " + fields.pop("step") + total + ": "
                  + ", ".join(f"{k} {v}" for k, v in fields.items()), flush=True)
        elif "train_runtime" in logs or any(k.startswith("eval_") for k in logs):
            print(_summary(logs), flush=True)


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


class ResumedStepFiles(TrainerCallback):
    """When training starts (new or resumed), metrics.jsonl and rollouts.jsonl keep only the lines of the
    steps before it (none for a new run): a resumed run trains the steps after its checkpoint again, and a
    new run in the same output_dir starts its own files. Main process only."""

    def __init__(self, output_dir: str | os.PathLike):
        self.output_dir = Path(output_dir)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        for name in ("metrics.jsonl", "rollouts.jsonl"):
            trim_metrics(self.output_dir / name, state.global_step)


class LengthCheckCallback(TrainerCallback):
    """Greedy generations for held-out prompts before and after training; prints asked vs
    delivered and writes OUTPUT_DIR/length_check.json. `max_new_tokens` None: each prompt gets
    the eval's score-neutral budget (`larft.budget`), so no answer is cut short of 3x its target.

    With a `trainer`, the check runs on every process, with the parameters gathered the way TRL
    gathers them for its own rollouts (`unwrap_model_for_generation`) and `synced_gpus` on several
    processes, so that under ZeRO-3 or FSDP every rank joins each forward's all-gathers; only the main
    process writes. The "after" half runs when training ends having reached max_steps (not when it
    was stopped), before the model card is written."""

    def __init__(self, rows: list[dict[str, Any]], tokenizer: Any, max_new_tokens: int | None, output_dir: str,
                 chat_template_kwargs: dict | None = None, reasoning: tuple = DEFAULT_REASONING, trainer: Any = None):
        self.rows = rows
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.chat_template_kwargs = chat_template_kwargs
        self.reasoning = reasoning
        self.trainer = trainer
        self.path = Path(output_dir) / "length_check.json"
        self.results: dict[str, list[dict[str, Any]]] = {}

    @property
    def _is_main(self) -> bool:
        return self.trainer is None or self.trainer.accelerator.is_main_process

    def _generating(self, model: Any) -> Any:
        """The model to generate with, as TRL generates its rollouts (ZeRO-3 parameters gathered)."""
        from contextlib import nullcontext

        if self.trainer is None:
            return nullcontext(model)
        from trl.models import unwrap_model_for_generation

        trainer = self.trainer
        return unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator,
                                           gather_deepspeed3_params=trainer.args.ds3_gather_for_generation)

    def _run(self, model: Any, label: str) -> None:
        from larft.budget import answer_budget
        from larft.generation import generate_records, weights_precision

        budgets = self.max_new_tokens
        if budgets is None:
            specs = [LengthSpec.of(r) for r in self.rows]
            budgets = [answer_budget(s.required_goal(), self.tokenizer, s.constraint) for s in specs]
        several = self.trainer is not None and self.trainer.accelerator.num_processes > 1
        with self._generating(model) as unwrapped, weights_precision(unwrapped):  # not under the training's autocast
            records = generate_records(unwrapped, self.tokenizer, [r["prompt"] for r in self.rows],
                                       max_new_tokens=budgets, chat_template_kwargs=self.chat_template_kwargs,
                                       reasoning=self.reasoning, synced_gpus=several or None)
        results = []
        for row, record in zip(self.rows, records):
            text = record.text
            spec = LengthSpec.of(row)
            delivered = measure(text, spec.unit, tokenizer=self.tokenizer, extract=False)
            prompt = row["prompt"]
            results.append(
                {
                    "prompt": prompt[-1]["content"] if isinstance(prompt, list) else str(prompt),
                    "constraint": spec.constraint,
                    "unit": spec.unit,
                    "target": spec.as_json(),
                    "delivered": delivered,
                    "deviation": length_deviation(delivered, spec.required_goal(), spec.constraint),
                    "truncated": record.truncated,
                    "text": text,
                }
            )
        self.results[label] = results

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if "before" not in self.results:
            self.before(model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.trainer is not None and state.max_steps > 0 and state.global_step >= state.max_steps:
            self.finish(model)

    def _saved_before(self) -> list[dict[str, Any]] | None:
        """A resumed run's "before" (the base model's, measured when the run began), read by the main
        process and shared with the others, so that every process makes the same choice."""
        saved = None
        if self._is_main and self.path.exists():
            saved = json.loads(self.path.read_text(encoding="utf-8")).get("before") or None
        if self.trainer is not None and self.trainer.accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            saved = broadcast_object_list([saved], from_process=0)[0]
        return saved

    def before(self, model: Any) -> None:
        """The 'before' half (the baselines of `larft.baselines` call it themselves, without a Trainer)."""
        saved = self._saved_before()
        if saved:
            self.results["before"] = saved
            return
        self._run(model, "before")
        self._save()

    def _save(self) -> None:
        if not self._is_main:
            return
        tmp = self.path.with_suffix(".json.tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(self.results, indent=2, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, self.path)

    def finish(self, model: Any) -> None:
        """After a completed run (not an interrupted one): the 'after' half, printed and saved."""
        self._run(model, "after")
        self._save()
        if self._is_main:
            print(format_length_check(self.results))


def format_length_check(results: dict[str, list[dict[str, Any]]]) -> str:
    before, after = results.get("before", []), results.get("after", [])
    lines = ["", "Asked vs delivered length (greedy, held-out prompts)", ""]
    lines.append(f"{'constraint':<10} {'unit':<6} {'asked':>9} {'before':>7} {'after':>7}")
    for b, a in zip(before, after):
        asked = "-".join(map(str, b["target"])) if isinstance(b["target"], list) else str(b["target"])
        lines.append(f"{b['constraint']:<10} {b['unit']:<6} {asked:>9} {b['delivered']:>7} {a['delivered']:>7}")
    if before and after:
        mean = lambda rs: sum(min(r["deviation"], 10.0) for r in rs) / len(rs)  # noqa: E731
        lines.append("")
        b, a = mean(before), mean(after)
        change = f" ({100 * (a - b) / b:+.0f}%)" if b > 0 else ""
        lines.append(f"mean relative length error (|delivered - asked| / asked, 0 inside an at_most / at_least "
                     f"bound; {len(before)} held-out prompts): before {b:.2f}, after {a:.2f}{change}")
    return "\n".join(lines)
