"""`larft eval`: run the benchmarks of the registry (larft.eval.registry) on one model and write
results.json, report.md and plots.

`Evaluator` holds the model, the generation stack and the budgets: an engine per --backend
(larft.eval.generators) under the batching, the cache (resumable: larft.eval.cache) and, with
--best_of N, the best-of-N layer (larft.eval.best_of). Each benchmark (larft.eval.tasks,
larft.eval.probes) asks it for generations and scores them with its own counter and metric.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from larft.errors import UserError
from larft.eval import benchmarks as B
from larft.eval.best_of import BestOfN, Chosen, length_row
from larft.eval.cache import CachedGenerator, GenerationCache
from larft.eval.generators import BACKENDS, GENERATORS, Batched, Job, LocalModel, Sampling, load_vllm
from larft.eval.probes import COUNTING_DEFINITIONS, counting_metrics, counting_texts, reference_texts
from larft.eval.registry import FILTER_KEYS, NAMED_BENCHES, parse_filters, plan, select
from larft.eval.settings import EvalSettings
from larft.length import final_text

__all__ = [  # the names other code imports from here (some now live in the modules above)
    "BACKENDS", "COUNTING_DEFINITIONS", "FILTER_KEYS", "NAMED_BENCHES", "EvalSettings", "Evaluator", "counting_metrics",
    "counting_texts", "length_row", "load_vllm", "parse_filters", "reference_texts", "run_eval", "run_lm_eval",
    "select", "versions",
]


class Evaluator:
    """The model, its generation stack and the settings of one eval run."""

    def __init__(self, model_name: str, out_dir: str | os.PathLike, settings: EvalSettings,
                 trust_remote_code: bool = False):
        from larft.budget import tokens_per_word
        from larft.length import parse_delimiters
        from larft.models import load_tokenizer, resolve_device, resolve_model

        self.device, self.dtype = resolve_device(settings.device, settings.dtype)
        self.reasoning = parse_delimiters(settings.reasoning_delimiters)
        self.model_name = model_name
        self.model_path = resolve_model(model_name)
        self.tokenizer = load_tokenizer(self.model_path, trust_remote_code=trust_remote_code)
        self.trust_remote_code = trust_remote_code
        self.local = LocalModel(self.model_path, self.tokenizer, self.device, self.dtype, trust_remote_code)
        engine = GENERATORS[settings.backend](self.local, settings.chat_template_kwargs, settings.seed)
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        if settings.tokens_per_word is None:
            settings.tokens_per_word = tokens_per_word(self.tokenizer)
        if settings.tokens_per_word_cn is None:
            settings.tokens_per_word_cn = tokens_per_word(self.tokenizer, "cn")
        self.settings = settings
        self.cache = GenerationCache(self.out / "generations.jsonl")
        self.batched = Batched(engine, self.tokenizer, settings.batch_size, settings.max_batch_tokens,
                               settings.chat_template_kwargs)

    @property
    def model(self) -> Any:
        """The transformers model, loaded on first use (with the vLLM backend only retention needs it)."""
        return self.local.model

    @property
    def context_window(self) -> int | None:
        """From the model's config (read once)."""
        return getattr(self.local.config, "max_position_embeddings", None)

    def generate(self, bench: str, jobs: list[Job], rows: dict[str, dict[str, Any]] | None = None,
                 ) -> dict[str, dict[str, Any]]:
        """Job id -> {text, max_new_tokens, truncated, new_tokens, gen_tokens}, generating only what
        the cache lacks. Every job gets the system prompt and exactly its own budget; the cache key
        holds the budget and the decoding settings (a changed setting regenerates, it never reuses).

        `rows`: job id -> the prompt's length instruction ({target, constraint, unit}). With them and
        --best_of N, every prompt is sampled N times (each sample cached on its own) and the answer
        with the highest length reward is returned (ties: the first) with `best_of_rewards`;
        `gen_tokens` counts all N samples, `new_tokens` the chosen one."""
        from larft.generation import with_system_prompt

        s = self.settings
        jobs = [Job(j.id, with_system_prompt(j.messages, s.system_prompt), j.budget) for j in jobs]
        mode = s.decoding_key(length_targets=rows is not None)
        generator: Any = CachedGenerator(self.batched, self.cache, lambda job: f"{bench}/{job.id}/{mode}/max{job.budget}",
                                         desc=f"{bench}: generating")
        if rows is not None and s.best_of > 1:
            generator = BestOfN(generator, s.best_of, rows, self.tokenizer, self.reasoning)
        sampling = Sampling(s.sampled(length_targets=rows is not None), s.temperature, s.top_p, s.seed)
        out = {}
        for job, g in zip(jobs, generator.generate(jobs, sampling)):
            out[job.id] = {"text": final_text(g.text, self.reasoning), "max_new_tokens": g.max_new_tokens,
                           "truncated": g.truncated, "new_tokens": g.new_tokens,
                           "gen_tokens": g.gen_tokens if isinstance(g, Chosen) else g.new_tokens}
            if isinstance(g, Chosen):
                out[job.id]["best_of_rewards"] = g.rewards
        return out

    def generate_items(self, bench: str, items: list[B.EvalItem]) -> list[dict[str, Any]]:
        """The answers to a length benchmark's prompts, in order, each with its score-neutral budget."""
        jobs = [Job(it.id, it.messages, self.item_budget(it)[0]) for it in items]
        rows = {it.id: length_row(it, bench) for it in items} if self.settings.best_of > 1 else None
        outputs = self.generate(bench, jobs, rows=rows)
        return [outputs[it.id] for it in items]

    def item_budget(self, it: B.EvalItem) -> tuple[int, bool]:
        """The score-neutral budget of one eval prompt (EvalSettings.budget) and whether the cap cut it."""
        return self.settings.budget(it.target, it.lang, it.control, it.meta.get("metric", "lifebench"))


def versions() -> dict[str, str]:
    import importlib.metadata as md

    found = {}
    for pkg in ("larft", "torch", "transformers", "trl"):
        try:
            found[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            found[pkg] = "not installed"
    return found


def run_eval(model: str, benches: list[str], out_dir: str, settings: EvalSettings,
             bench_files: list[tuple[str, str]] | None = None, trust_remote_code: bool = False,
             lm_eval_tasks: list[str] | None = None, lm_eval_include_path: str | None = None) -> dict:
    """Run the named benchmarks and files; write results.json, report.md and plots in out_dir."""
    from larft.eval.report import write_report

    if lm_eval_tasks:
        import importlib.util

        if importlib.util.find_spec("lm_eval") is None:
            raise UserError("--lm-eval-tasks needs lm-evaluation-harness: pip install lm-eval")
    planned = plan(benches, bench_files, settings)  # every prompt set read and checked before the model loads
    if not planned and not lm_eval_tasks:
        raise UserError("nothing to evaluate: give --bench NAME and/or --bench-file PATH --format FMT")
    if settings.best_of < 1:
        raise UserError(f"--best-of must be >= 1, got {settings.best_of}")
    if settings.best_of > 1:  # every prompt best-of-N would score must have a unit it can count, before any model
        for name, _, items in planned:
            for it in items or []:
                length_row(it, name)

    evaluator = Evaluator(model, out_dir, settings, trust_remote_code)
    results: dict[str, Any] = {
        "model": model, "model_path": evaluator.model_path, "settings": asdict(settings), "versions": versions(),
        "device": evaluator.device, "dtype": evaluator.dtype,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "benchmarks": {},
    }
    for name, bench, items in planned:
        t0 = time.perf_counter()
        results["benchmarks"][name] = bench.run(evaluator, name, items)
        results["benchmarks"][name]["seconds"] = time.perf_counter() - t0
    if lm_eval_tasks:
        results["lm_eval"] = run_lm_eval(evaluator.model_path, lm_eval_tasks, settings.limit, evaluator.device,
                                         evaluator.dtype, trust_remote_code, lm_eval_include_path)
    write_report(results, Path(out_dir))
    return results


def run_lm_eval(model_path: str, tasks: list[str], limit: int | None, device: str = "cpu", dtype: str = "float32",
                trust_remote_code: bool = False, include_path: str | None = None) -> dict:
    """Pass-through to lm-evaluation-harness for general capability (needs its datasets), on the
    same device and dtype as the rest of the eval. `include_path`: a folder of task YAMLs
    (e.g. a task over a local JSONL file, which needs no Hub)."""
    try:
        import lm_eval
    except ImportError:
        raise UserError("--lm-eval-tasks needs lm-evaluation-harness: pip install lm-eval") from None
    args = f"pretrained={model_path},dtype={dtype},trust_remote_code={trust_remote_code}"
    task_manager = None
    if include_path:
        from lm_eval.tasks import TaskManager

        task_manager = TaskManager(include_path=include_path)
    out = lm_eval.simple_evaluate(model="hf", model_args=args, tasks=tasks, limit=limit, device=device,
                                  task_manager=task_manager)
    return {"tasks": tasks, "results": out["results"]}
