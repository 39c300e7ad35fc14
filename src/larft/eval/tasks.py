"""The length benchmarks of `larft eval`: each one a small class with how its prompts are read,
its counter, its aggregate and its intervals. `LengthBenchmark.run` does what they share:
keep the prompts that fit (context window, --max_new_tokens_cap), generate, count, aggregate,
add the 95% bootstrap intervals and the inference cost. The registry of names and --format
values is `larft.eval.registry`; the counting and retention probes are `larft.eval.probes`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from larft.eval import benchmarks as B
from larft.eval.counters import lenctrl_count, lifebench_count, longbench_write_count, ruler_count
from larft.eval.metrics import (
    RULER_PM, answer_health, lifebench_aggregate, lifebench_headline, lifebench_ls_by_length, longbench_sl,
    mean_absolute_error, ruler_aggregate, ruler_hit,
)
from larft.eval.settings import EvalSettings
from larft.eval.stats import bootstrap_cis
from larft.length import ends_on_sentence, is_looping
from larft.logs import get_logger

logger = get_logger(__name__)

Reader = Callable[[Path], "list[B.EvalItem]"]


class EvalRun(Protocol):
    """What a benchmark uses of the run (`larft.eval.runner.Evaluator`)."""

    settings: EvalSettings
    tokenizer: Any
    model: Any  # the transformers model (retention)
    context_window: int | None

    def item_budget(self, it: B.EvalItem) -> tuple[int, bool]: ...

    def generate_items(self, bench: str, items: list[B.EvalItem]) -> list[dict[str, Any]]: ...

    def generate(self, bench: str, jobs: Sequence[Any], rows: dict | None = None) -> dict[str, dict[str, Any]]: ...


class Benchmark:
    """One benchmark of `larft eval`. `read` gives its prompt set, read before any model is loaded
    (None: it builds its own while it runs); `run` scores it into its entry of results.json."""

    counter = ""  # the counter recorded in results.json

    def read(self, path: Path | None = None) -> list[B.EvalItem] | None:
        return None

    def run(self, ev: EvalRun, name: str, items: list[B.EvalItem] | None = None) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def cis(settings: EvalSettings, samples: list, statistic: Callable, strata: Callable | None = None) -> dict:
        return bootstrap_cis(samples, statistic, strata=strata, n_resamples=settings.bootstrap, seed=settings.seed)


class LengthBenchmark(Benchmark):
    """A benchmark of prompts that ask for a length: read from `file` (under the benchmark data
    folder) or a --bench_file, counted by `count`, scored by `metrics`."""

    reader: Reader

    def __init__(self, file: str | None = None, reader: Reader | None = None):
        self.file = file
        if reader is not None:
            self.reader = reader

    def read(self, path: Path | None = None) -> list[B.EvalItem]:
        return self.reader(path if path is not None else B.benchmark_data_dir() / self.file)

    # -- per benchmark ------------------------------------------------------------------------
    def count(self, item: B.EvalItem, text: str) -> int:
        raise NotImplementedError

    def extra(self, item: B.EvalItem, sample: dict[str, Any]) -> dict[str, Any]:
        """Fields a sample of this benchmark carries besides the common ones."""
        return {}

    def metrics(self, samples: list[dict[str, Any]], settings: EvalSettings) -> dict[str, Any]:
        raise NotImplementedError

    def health(self, samples: list[dict[str, Any]], metrics: dict[str, Any]) -> dict[str, Any]:
        """Answer health (`larft.eval.metrics.answer_health`), overall and per target length."""
        return answer_health(samples)

    # -- shared -------------------------------------------------------------------------------
    def run(self, ev: EvalRun, name: str, items: list[B.EvalItem] | None = None) -> dict[str, Any]:
        items, excluded = self.runnable(ev, items or [])
        if not items:
            return self.nothing_to_score(name, excluded)
        outputs = ev.generate_items(name, items)
        samples = [self.sample(it, out) for it, out in zip(items, outputs)]
        metrics = self.metrics(samples, ev.settings)
        metrics.update(self.cost(samples, ev.settings))
        metrics["health"] = self.health(samples, metrics)
        return {"metrics": metrics, "samples": samples, "counter": self.counter, **excluded}

    def sample(self, it: B.EvalItem, output: dict[str, Any]) -> dict[str, Any]:
        """One answer's record in results.json: its lengths, budget and health flags, not its text."""
        text = output["text"]
        sample = {"id": it.id, "lang": it.lang, "control": it.control, "target": it.target,
                  "length": self.count(it, text), "max_new_tokens": output["max_new_tokens"],
                  "truncated": output["truncated"], "new_tokens": output["new_tokens"], "gen_tokens": output["gen_tokens"],
                  "ends_on_sentence": ends_on_sentence(text), "loops": is_looping(text)}
        if "best_of_rewards" in output:
            sample["best_of_rewards"] = output["best_of_rewards"]
        return {**sample, **self.extra(it, sample)}

    @staticmethod
    def cost(samples: list[dict[str, Any]], settings: EvalSettings) -> dict[str, Any]:
        """The inference cost beside the scores: N of best-of-N and the mean tokens generated per
        prompt, all N samples counted (what LARFT's one answer is compared with)."""
        n = len(samples)
        return {"best_of": settings.best_of,
                "gen_tokens_per_prompt": sum(x["gen_tokens"] for x in samples) / n if n else None}

    def runnable(self, ev: EvalRun, items: list[B.EvalItem]) -> tuple[list[B.EvalItem], dict[str, list[str]]]:
        items, skipped = self.fitting(ev, items)
        items, limited = self.reachable(ev, items)
        return items, {"skipped_too_long": skipped, "budget_limited": limited}

    @staticmethod
    def fitting(ev: EvalRun, items: list[B.EvalItem]) -> tuple[list[B.EvalItem], list[str]]:
        """Items whose prompt + generation budget fit the model's context window, and the ids
        of those that do not (reported in results.json, never silently dropped)."""
        from larft.generation import prompt_length, with_system_prompt

        window = ev.context_window
        if window is None:
            return items, []
        fit, skipped = [], []
        for it in items:
            messages = with_system_prompt(it.messages, ev.settings.system_prompt)
            n = prompt_length(ev.tokenizer, messages, ev.settings.chat_template_kwargs)
            (fit.append(it) if n + ev.item_budget(it)[0] <= window else skipped.append(it.id))
        if skipped:
            logger.warning(f"{len(skipped)} prompt(s) longer than the model's context window ({window} tokens) "
                           f"are skipped and listed in results.json: {skipped[:5]}{' ...' if len(skipped) > 5 else ''}")
        return fit, skipped

    @staticmethod
    def reachable(ev: EvalRun, items: list[B.EvalItem]) -> tuple[list[B.EvalItem], list[str]]:
        """Items whose budget the cap does not cut, and the ids of those it does (listed in
        results.json and report.md, kept out of the headline, never silently scored)."""
        kept, limited = [], []
        for it in items:
            (limited.append(it.id) if ev.item_budget(it)[1] else kept.append(it))
        if limited:
            logger.warning(f"{len(limited)} prompt(s) need more than --max-new-tokens-cap={ev.settings.max_new_tokens_cap} "
                           f"new tokens to reach their target: not generated, listed in results.json as budget_limited")
        return kept, limited

    def nothing_to_score(self, name: str, excluded: dict) -> dict:
        note = (f"{name}: no prompt left to score ({len(excluded['skipped_too_long'])} longer than the context "
                f"window, {len(excluded['budget_limited'])} above --max-new-tokens-cap)")
        logger.warning(note)
        return {"metrics": {"n": 0, "note": note}, "samples": [], "counter": self.counter, **excluded}


class LifeBench(LengthBenchmark):
    """LIFEBench (lite, label, refactor files): LD / LS per control and length, refusals dropped."""

    counter = "lifebench"
    reader = staticmethod(B.lifebench_items)

    def count(self, item: B.EvalItem, text: str) -> int:
        return lifebench_count(text)

    def metrics(self, samples: list[dict[str, Any]], settings: EvalSettings) -> dict[str, Any]:
        triples = [(x["control"], x["target"], x["length"]) for x in samples]
        result = lifebench_aggregate(triples)
        result["ci95"] = self.cis(settings, triples, lifebench_headline, strata=lambda x: (x[0], x[1]))
        langs = sorted({x["lang"] for x in samples})
        if len(langs) > 1:
            result["per_lang"] = {
                lang: lifebench_aggregate((x["control"], x["target"], x["length"]) for x in samples if x["lang"] == lang)
                for lang in langs
            }
        result["n"] = len(samples)
        result["truncated"] = sum(x["truncated"] for x in samples)
        return result

    def health(self, samples: list[dict[str, Any]], metrics: dict[str, Any]) -> dict[str, Any]:
        """Per target length, beside the LS of that length (the mean over its controls)."""
        health = answer_health(samples)
        ls = lifebench_ls_by_length(metrics)
        for t, cell in health["per_length"].items():
            cell["LS"] = ls.get(t)
        health["LS"] = metrics.get("LS")
        return health


class LongBenchWrite(LengthBenchmark):
    """LongBench-Write's format (the LongWrite-Ruler set): S_l, overall and per asked length."""

    counter = "longbench-write"
    reader = staticmethod(B.longbench_write_items)

    def count(self, item: B.EvalItem, text: str) -> int:
        return longbench_write_count(text)

    def extra(self, item: B.EvalItem, sample: dict[str, Any]) -> dict[str, Any]:
        return {"S_l": longbench_sl(sample["length"], sample["target"])}

    def metrics(self, samples: list[dict[str, Any]], settings: EvalSettings) -> dict[str, Any]:
        per_length: dict[int, list[float]] = {}
        for x in samples:
            per_length.setdefault(x["target"], []).append(x["S_l"])
        mean_sl = lambda xs: {"S_l": sum(x["S_l"] for x in xs) / len(xs)}  # noqa: E731
        return {"S_l": mean_sl(samples)["S_l"], "n": len(samples), "ci95": self.cis(settings, samples, mean_sl),
                "per_length": {t: sum(v) / len(v) for t, v in sorted(per_length.items())},
                "truncated": sum(x["truncated"] for x in samples)}

    def health(self, samples: list[dict[str, Any]], metrics: dict[str, Any]) -> dict[str, Any]:
        health = answer_health(samples)
        for t, cell in health["per_length"].items():
            cell["S_l"] = metrics["per_length"].get(t)
        health["S_l"] = metrics.get("S_l")
        return health


class RulerTLG(LengthBenchmark):
    """Ruler's target-length generation over larft's evaluation instructions: PM / FM per level."""

    counter = "ruler"

    def read(self, path: Path | None = None) -> list[B.EvalItem]:
        return B.ruler_tlg_items(B.ruler_instructions())

    def count(self, item: B.EvalItem, text: str) -> int:
        return ruler_count(text)

    def extra(self, item: B.EvalItem, sample: dict[str, Any]) -> dict[str, Any]:
        return {"target_label": item.meta["target_label"]}

    def metrics(self, samples: list[dict[str, Any]], settings: EvalSettings) -> dict[str, Any]:
        metrics = ruler_aggregate((x["target_label"], x["length"]) for x in samples)
        pooled = lambda xs: {k: v for k, v in ruler_aggregate((x["target_label"], x["length"]) for x in xs)["all"].items()  # noqa: E731
                             if k in ("PM", "FM")}
        if samples:
            metrics["ci95"] = self.cis(settings, samples, pooled)
        return metrics

    def health(self, samples: list[dict[str, Any]], metrics: dict[str, Any]) -> dict[str, Any]:
        """Per target label (Ruler's buckets: 10 ... >800), beside its PM."""
        health = answer_health(samples, bucket=lambda x: x["target_label"], order=B.RULER_TARGETS.index)
        for label, cell in health["per_length"].items():
            members = [x for x in samples if x["target_label"] == label]
            cell["PM"] = 100 * sum(ruler_hit(x["length"], label, RULER_PM) for x in members) / len(members)
        return health


class LenCtrl(LengthBenchmark):
    """LenCtrl-Bench's format: MAE of words, sentences or paragraphs, overall and per level."""

    counter = "lenctrl"
    reader = staticmethod(B.lenctrl_items)

    def count(self, item: B.EvalItem, text: str) -> int:
        return lenctrl_count(text, item.meta["level"])

    def extra(self, item: B.EvalItem, sample: dict[str, Any]) -> dict[str, Any]:
        return {"level": item.meta["level"]}

    def metrics(self, samples: list[dict[str, Any]], settings: EvalSettings) -> dict[str, Any]:
        mae = lambda xs: {"MAE": mean_absolute_error((x["length"], x["target"]) for x in xs)}  # noqa: E731
        metrics = {"MAE": mae(samples)["MAE"], "n": len(samples), "ci95": self.cis(settings, samples, mae),
                   "per_level": {}}
        for level in sorted({x["level"] for x in samples}):
            sel = [x for x in samples if x["level"] == level]
            metrics["per_level"][level] = {"MAE": mean_absolute_error((x["length"], x["target"]) for x in sel),
                                           "n": len(sel)}
        metrics["note"] = "stand-in splitter (no public LenCtrl-Bench code): not guaranteed to match the paper"
        return metrics

    def health(self, samples: list[dict[str, Any]], metrics: dict[str, Any]) -> dict[str, Any]:
        """Per level (word / sentence / paragraph: the targets of different units), beside its MAE."""
        health = answer_health(samples, bucket=lambda x: x["level"], name="per_level")
        for level, cell in health["per_level"].items():
            cell["MAE"] = metrics["per_level"][level]["MAE"]
        return health
