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


class LengthCheckCallback(TrainerCallback):
    """Greedy generations for held-out prompts before and after training; prints asked vs
    delivered and writes OUTPUT_DIR/length_check.json. `max_new_tokens` None: each prompt gets
    the eval's score-neutral budget (`larft.budget`), so no answer is cut short of 3x its target."""

    def __init__(self, rows: list[dict[str, Any]], tokenizer: Any, max_new_tokens: int | None, output_dir: str,
                 chat_template_kwargs: dict | None = None, reasoning: tuple = DEFAULT_REASONING):
        self.rows = rows
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.chat_template_kwargs = chat_template_kwargs
        self.reasoning = reasoning
        self.path = Path(output_dir) / "length_check.json"
        self.results: dict[str, list[dict[str, Any]]] = {}

    def _run(self, model: Any, label: str) -> None:
        from larft.budget import answer_budget
        from larft.generation import generate_records, weights_precision

        budgets = self.max_new_tokens
        if budgets is None:
            specs = [LengthSpec.of(r) for r in self.rows]
            budgets = [answer_budget(s.required_goal(), self.tokenizer, s.constraint) for s in specs]
        with weights_precision(model):  # during training: not under the training's bf16 autocast
            records = generate_records(model, self.tokenizer, [r["prompt"] for r in self.rows],
                                       max_new_tokens=budgets, chat_template_kwargs=self.chat_template_kwargs,
                                       reasoning=self.reasoning)
        results = []
        for row, record in zip(self.rows, records):
            text = record.text
            spec = LengthSpec.of(row)
            delivered = measure(text, spec.unit, tokenizer=self.tokenizer, extract=False)
            results.append(
                {
                    "prompt": row["prompt"][-1]["content"],
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
        if not state.is_world_process_zero or "before" in self.results:
            return
        self.before(model)

    def before(self, model: Any) -> None:
        """The 'before' half (the baselines of `larft.baselines` call it themselves, without a Trainer)."""
        if self.path.exists():  # a resumed run: "before" is the base model's, measured when the run began
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            if saved.get("before"):
                self.results["before"] = saved["before"]
                return
        self._run(model, "before")
        self._save()

    def _save(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.results, indent=2, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, self.path)

    def finish(self, model: Any) -> None:
        """After a completed run (not an interrupted one): the 'after' half, printed and saved."""
        if not self.results:  # not the main process
            return
        self._run(model, "after")
        self._save()
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
