"""`larft eval`: generate (batched, cached, resumable), score each benchmark with its own
counter and metric, write results.json, report.md and plots."""

from __future__ import annotations

import functools
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from larft.awareness import counting_instruction, parse_count
from larft.eval import benchmarks as B
from larft.eval.cache import GenerationCache
from larft.eval.counters import lenctrl_count, lifebench_count, longbench_write_count, ruler_count
from larft.eval.metrics import (
    RULER_LEVELS, lifebench_aggregate, lifebench_headline, longbench_sl, mean_absolute_error, ruler_aggregate,
)
from larft.eval.stats import bootstrap_cis
from larft.length import count_words, final_text

BACKENDS = ("hf", "vllm", "ct2")


def load_vllm(model_path: str, dtype: str, seed: int, trust_remote_code: bool) -> Any:
    """A vLLM engine for generation (GPU). A missing vLLM is a clear error naming the extra."""
    try:
        from vllm import LLM
    except ImportError:
        raise ValueError("--backend vllm needs vLLM: pip install 'larft[vllm]' (a CUDA machine)") from None
    return LLM(model=model_path, dtype=dtype, seed=seed, trust_remote_code=trust_remote_code)


NAMED_BENCHES = ("lifebench", "lifebench-label", "lifebench-refactor", "longwrite-ruler", "ruler-tlg", "counting",
                 "retention")
FILTER_KEYS = ("lang", "control", "min_length", "max_length", "level")


@dataclass
class EvalSettings:
    batch_size: int = 8
    max_batch_tokens: int = 16384  # padded (prompt + new) tokens per generation batch
    max_new_tokens_cap: int = 2048
    tokens_per_word: float | None = None  # the tokenizer's tokens per word; None: measured (larft.budget)
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.8
    seed: int = 0
    limit: int | None = None
    filters: dict[str, str] = field(default_factory=dict)
    counting_own: int = 24  # own generations the counting probe asks the model to count
    device: str = "auto"  # auto: CUDA when present, else CPU
    dtype: str = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    chat_template_kwargs: dict | None = None
    reasoning_delimiters: str = "<think>,</think>"
    bootstrap: int = 1000  # resamples for the 95% intervals
    backend: str = "hf"  # hf (transformers generate), ct2 (CTranslate2 on CPU, fp32) or vllm (GPU)
    best_of: int = 1  # N > 1: sample N answers per length prompt, keep the highest length reward (larft.best_of)
    tokens_per_word_cn: float | None = None  # per CJK character; None: measured
    system_prompt: str = "default"  # system message before every prompt (larft.generation.with_system_prompt)

    def budget(self, target: int, lang: str = "en", control: str = "equal", metric: str = "lifebench") -> tuple[int, bool]:
        """(max_new_tokens for this prompt, whether --max-new-tokens-cap cut it). Score-neutral: the
        answer may reach the length where its score is already ~0 (`larft.budget`), so a cut answer
        scores as an uncut run-away would. A prompt the cap cuts is `budget_limited`: listed, not
        generated, kept out of the headline."""
        from larft.budget import token_budget, zero_score_multiple

        per_word = self.tokens_per_word_cn if lang == "cn" else self.tokens_per_word
        if per_word is None:
            raise ValueError("EvalSettings.tokens_per_word is not set: the Evaluator measures it from the tokenizer")
        need = token_budget(target, zero_score_multiple(control, metric), per_word)
        return min(self.max_new_tokens_cap, need), need > self.max_new_tokens_cap

    def max_new_tokens(self, target: int, lang: str = "en", control: str = "equal", metric: str = "lifebench") -> int:
        return self.budget(target, lang, control, metric)[0]

    def sampled(self, length_targets: bool = True) -> bool:
        """Whether generation samples: --sample, or best-of-N (on prompts with a length target)."""
        return self.do_sample or (length_targets and self.best_of > 1)

    def decoding_key(self, length_targets: bool = True) -> str:
        """Everything besides the prompt and budget that changes an output: part of the cache key.
        Best-of-N applies to prompts with a length target (`length_targets`); the others (counting
        answers) are decoded as without it."""
        mode = f"sample-t{self.temperature}-p{self.top_p}-s{self.seed}" if self.sampled(length_targets) else "greedy"
        if length_targets and self.best_of > 1:
            mode += f"-best{self.best_of}"
        if self.backend != "hf":  # another engine's numerics: its own cache entries
            mode += f"-{self.backend}"
        if self.chat_template_kwargs:
            mode += "-tpl" + json.dumps(self.chat_template_kwargs, sort_keys=True)
        if self.system_prompt != "default":
            mode += "-sys" + json.dumps(self.system_prompt)
        return mode


def length_row(item: B.EvalItem, bench: str) -> dict[str, Any]:
    """The length instruction of an eval prompt as larft's reward reads it (best-of-N picks by it):
    its target and control, counted in words (larft's counter: a CJK character is a word)."""
    level = item.meta.get("level", "word")
    if level != "word":
        raise ValueError(f"--best-of: {bench} prompt {item.id} asks for {item.target} {level}s; best-of-N picks by "
                         "larft's length reward, which counts words, characters or tokens, not that unit")
    return {"target": item.target, "constraint": item.control, "unit": "words"}


def parse_filters(text: str | None) -> dict[str, str]:
    """`lang=en,max_length=64` -> {"lang": "en", "max_length": "64"}."""
    filters: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ValueError(f"--filter: expected key=value, got {part!r}")
        key, value = (x.strip() for x in part.split("=", 1))
        if key not in FILTER_KEYS:
            raise ValueError(f"--filter: unknown key {key!r}; expected one of {', '.join(FILTER_KEYS)}")
        if key in ("min_length", "max_length", "level") and not value.isdigit():
            raise ValueError(f"--filter: {key} must be an integer, got {value!r}")
        filters[key] = value
    return filters


def select(items: list[B.EvalItem], settings: EvalSettings, bench: str) -> list[B.EvalItem]:
    """The items that pass --filter, then a seeded sample of --limit of them."""
    f = settings.filters
    level_of = {t: lvl for lvl, ts in RULER_LEVELS.items() for t in ts}
    kept = [
        it for it in items
        if ("lang" not in f or it.lang == f["lang"])
        and ("control" not in f or it.control == f["control"])
        and ("min_length" not in f or it.target >= int(f["min_length"]))
        and ("max_length" not in f or it.target <= int(f["max_length"]))
        and ("level" not in f or "target_label" not in it.meta or level_of[it.meta["target_label"]] <= int(f["level"]))
    ]
    if settings.limit is not None and len(kept) > settings.limit:
        chosen = sorted(random.Random(settings.seed).sample(range(len(kept)), settings.limit))
        kept = [kept[i] for i in chosen]
    if not kept:
        raise ValueError(f"{bench}: no prompts left after --filter {settings.filters}")
    return kept


class Evaluator:
    """Holds the model, the cache and the settings; one method per benchmark kind."""

    def __init__(self, model_name: str, out_dir: str | os.PathLike, settings: EvalSettings,
                 trust_remote_code: bool = False):
        from larft.length import parse_delimiters
        from larft.models import load_model, load_tokenizer, resolve_device, resolve_model

        self.device, self.dtype = resolve_device(settings.device, settings.dtype)
        self.reasoning = parse_delimiters(settings.reasoning_delimiters)
        self.model_name = model_name
        self.model_path = resolve_model(model_name)
        self.tokenizer = load_tokenizer(self.model_path, trust_remote_code=trust_remote_code)
        self.trust_remote_code = trust_remote_code
        self._model: Any = None
        self._vllm: Any = None
        if settings.backend not in BACKENDS:
            raise ValueError(f"--backend: unknown value {settings.backend!r}; expected one of {', '.join(BACKENDS)}")
        if settings.backend == "vllm":
            self._vllm = load_vllm(self.model_path, self.dtype, settings.seed, trust_remote_code)
        self._ct2: Any = None
        if settings.backend == "ct2":
            from transformers import AutoConfig

            from larft.ct2_engine import check_convertible

            check_convertible(AutoConfig.from_pretrained(self.model_path, trust_remote_code=trust_remote_code))
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        from larft.budget import tokens_per_word

        if settings.tokens_per_word is None:
            settings.tokens_per_word = tokens_per_word(self.tokenizer)
        if settings.tokens_per_word_cn is None:
            settings.tokens_per_word_cn = tokens_per_word(self.tokenizer, "cn")
        self.settings = settings
        self.cache = GenerationCache(self.out / "generations.jsonl")

    @property
    def model(self) -> Any:
        """The transformers model, loaded on first use (with the vLLM backend only retention needs it)."""
        if self._model is None:
            from larft.models import load_model

            self._model = load_model(self.model_path, dtype=self.dtype, trust_remote_code=self.trust_remote_code,
                                     device=self.device)
        return self._model

    @property
    def ct2(self) -> Any:
        """The CTranslate2 engine (backend ct2), built from the transformers model on first use."""
        if self._ct2 is None:
            import torch

            from larft.ct2_engine import CT2Engine

            self._ct2 = CT2Engine(self.tokenizer, threads=torch.get_num_threads())
            self._ct2.sync(self.model)
        return self._ct2

    # -- generation -----------------------------------------------------------------------
    @functools.cached_property
    def context_window(self) -> int | None:
        """Read once from the model's config (every benchmark asks it)."""
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(self.model_path, trust_remote_code=self.trust_remote_code)
        return getattr(config, "max_position_embeddings", None)

    def generate(self, bench: str, jobs: list[tuple[str, list[dict], int]],
                 rows: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
        """jobs: (id, messages, max_new_tokens). Returns id -> {text, max_new_tokens, truncated,
        new_tokens, gen_tokens}, generating only what the cache lacks. Every prompt gets exactly its own
        budget (rows of a batch stop at their own limit), and the cache key holds the budget
        and the decoding settings: a changed setting regenerates, it never reuses. Batches
        group prompts of similar length under a padded-token cap; each batch is saved as soon
        as it is done.

        `rows`: id -> the prompt's length instruction ({target, constraint, unit}). With them and
        --best-of N, every prompt is sampled N times (each sample cached on its own) and the
        answer with the highest length reward is returned (ties: the first); `gen_tokens` counts
        all N samples, `new_tokens` the chosen one."""
        import torch
        from tqdm.auto import tqdm

        from larft.generation import generate_records, generate_records_vllm, prompt_length, with_system_prompt

        s = self.settings
        jobs = [(j[0], with_system_prompt(j[1], s.system_prompt), j[2]) for j in jobs]
        n = s.best_of if rows is not None else 1
        mode = s.decoding_key(length_targets=rows is not None)
        sample = s.sampled(length_targets=rows is not None)
        # (id, messages, budget, sample index): best-of-N samples are jobs of their own, id#k
        jobs_n = [(f"{j[0]}#{k}" if n > 1 else j[0], j[1], j[2], k) for j in jobs for k in range(n)]
        key = lambda job: f"{bench}/{job[0]}/{mode}/max{job[2]}"  # noqa: E731
        todo = [j for j in jobs_n if key(j) not in self.cache]
        sized = sorted(
            ((prompt_length(self.tokenizer, j[1], s.chat_template_kwargs) + j[2], j) for j in todo),
            key=lambda x: x[0],
        )
        batches, current, width = [], [], 0
        for total, job in sized:
            if current and (len(current) >= s.batch_size or max(width, total) * (len(current) + 1) > s.max_batch_tokens):
                batches.append(current)
                current, width = [], 0
            current.append(job)
            width = max(width, total)
        if current:
            batches.append(current)
        if batches:
            bar = tqdm(total=len(todo), desc=f"{bench}: generating", unit="prompt")
            for number, batch in enumerate(batches):
                if sample:
                    torch.manual_seed(s.seed + number)
                if self._vllm is not None:
                    # one seed per request: the N samples of a prompt must differ (same prompt + same seed
                    # = same answer in vLLM); with N = 1 this is the batch's seed, as before
                    records = generate_records_vllm(
                        self._vllm, self.tokenizer, [j[1] for j in batch], max_new_tokens=[j[2] for j in batch],
                        do_sample=sample, temperature=s.temperature, top_p=s.top_p, seed=s.seed + number,
                        seeds=[(s.seed + number) * n + j[3] for j in batch],
                        chat_template_kwargs=s.chat_template_kwargs,
                    )
                elif s.backend == "ct2":
                    from larft.generation import generate_records_ct2, stop_token_ids

                    records = generate_records_ct2(
                        self.ct2, self.tokenizer, [j[1] for j in batch], max_new_tokens=[j[2] for j in batch],
                        stop_ids=sorted(stop_token_ids(self.model, self.tokenizer)), do_sample=sample,
                        temperature=s.temperature, top_p=s.top_p, seed=s.seed + number,
                        chat_template_kwargs=s.chat_template_kwargs, reasoning=(),
                    )
                else:
                    records = generate_records(
                        self.model, self.tokenizer, [j[1] for j in batch], max_new_tokens=[j[2] for j in batch],
                        batch_size=len(batch), do_sample=sample, temperature=s.temperature, top_p=s.top_p,
                        chat_template_kwargs=s.chat_template_kwargs, reasoning=(),  # raw text cached, stripped on use
                    )
                for job, record in zip(batch, records):
                    self.cache.add(key(job), record.text, max_new_tokens=record.max_new_tokens,
                                   new_tokens=record.new_tokens, truncated=record.truncated)
                bar.update(len(batch))
            bar.close()
        out = {}
        for i, job in enumerate(jobs):
            cached = [self.cache.record(key(j)) for j in jobs_n[i * n:(i + 1) * n]]
            texts = [final_text(c["output"], self.reasoning) for c in cached]
            chosen, rewards = 0, None
            if n > 1:
                from larft.best_of import pick_best, row_rewards

                rewards = row_rewards(texts, rows[job[0]], tokenizer=self.tokenizer, reasoning=(),  # already stripped
                                      truncated=[c["truncated"] for c in cached])
                chosen = pick_best(rewards)
            best = cached[chosen]
            out[job[0]] = {"text": texts[chosen], "max_new_tokens": best["max_new_tokens"],
                           "truncated": best["truncated"], "new_tokens": best["new_tokens"],
                           "gen_tokens": sum(c["new_tokens"] for c in cached)}
            if rewards is not None:
                out[job[0]]["best_of_rewards"] = rewards
        return out

    def _generate_items(self, bench: str, items: list[B.EvalItem]) -> list[dict[str, Any]]:
        s = self.settings
        jobs = [(it.id, it.messages, self.item_budget(it)[0]) for it in items]
        rows = {it.id: length_row(it, bench) for it in items} if s.best_of > 1 else None
        outputs = self.generate(bench, jobs, rows=rows)
        return [outputs[it.id] for it in items]

    def item_budget(self, it: B.EvalItem) -> tuple[int, bool]:
        """The score-neutral budget of one eval prompt (EvalSettings.budget) and whether the cap cut it."""
        return self.settings.budget(it.target, it.lang, it.control, it.meta.get("metric", "lifebench"))

    def reachable(self, items: list[B.EvalItem]) -> tuple[list[B.EvalItem], list[str]]:
        """Items whose budget the cap does not cut, and the ids of those it does (listed in
        results.json and report.md, kept out of the headline, never silently scored)."""
        kept, limited = [], []
        for it in items:
            (limited.append(it.id) if self.item_budget(it)[1] else kept.append(it))
        if limited:
            print(f"[larft] {len(limited)} prompt(s) need more than --max-new-tokens-cap={self.settings.max_new_tokens_cap} "
                  f"new tokens to reach their target: not generated, listed in results.json as budget_limited")
        return kept, limited

    def _runnable(self, items: list[B.EvalItem]) -> tuple[list[B.EvalItem], dict[str, list[str]]]:
        items, skipped = self.fitting(items)
        items, limited = self.reachable(items)
        return items, {"skipped_too_long": skipped, "budget_limited": limited}

    @staticmethod
    def _nothing_to_score(bench: str, counter: str, excluded: dict) -> dict:
        note = (f"{bench}: no prompt left to score ({len(excluded['skipped_too_long'])} longer than the context "
                f"window, {len(excluded['budget_limited'])} above --max-new-tokens-cap)")
        print(f"[larft] {note}")
        return {"metrics": {"n": 0, "note": note}, "samples": [], "counter": counter, **excluded}

    @staticmethod
    def _sample(it: B.EvalItem, output: dict[str, Any], length: int) -> dict[str, Any]:
        sample = {"id": it.id, "lang": it.lang, "control": it.control, "target": it.target, "length": length,
                  "max_new_tokens": output["max_new_tokens"], "truncated": output["truncated"],
                  "new_tokens": output["new_tokens"], "gen_tokens": output["gen_tokens"]}
        if "best_of_rewards" in output:
            sample["best_of_rewards"] = output["best_of_rewards"]
        return sample

    def _cost(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """The inference cost beside the scores: N of best-of-N and the mean tokens generated per
        prompt, all N samples counted (what LARFT's one answer is compared with)."""
        n = len(samples)
        return {"best_of": self.settings.best_of,
                "gen_tokens_per_prompt": sum(x["gen_tokens"] for x in samples) / n if n else None}

    def fitting(self, items: list[B.EvalItem]) -> tuple[list[B.EvalItem], list[str]]:
        """Items whose prompt + generation budget fit the model's context window, and the ids
        of those that do not (reported in results.json, never silently dropped)."""
        from larft.generation import prompt_length, with_system_prompt

        window = self.context_window
        if window is None:
            return items, []
        fit, skipped = [], []
        for it in items:
            messages = with_system_prompt(it.messages, self.settings.system_prompt)
            n = prompt_length(self.tokenizer, messages, self.settings.chat_template_kwargs)
            budget = self.item_budget(it)[0]
            if n + budget <= window:
                fit.append(it)
            else:
                skipped.append(it.id)
        if skipped:
            print(f"[larft] {len(skipped)} prompt(s) longer than the model's context window ({window} tokens) "
                  f"are skipped and listed in results.json: {skipped[:5]}{' ...' if len(skipped) > 5 else ''}")
        return fit, skipped

    # -- benchmarks -------------------------------------------------------------------------
    def _cis(self, samples: list, statistic, strata=None) -> dict:
        s = self.settings
        return bootstrap_cis(samples, statistic, strata=strata, n_resamples=s.bootstrap, seed=s.seed)

    def lifebench(self, bench: str, items: list[B.EvalItem]) -> dict:
        items, excluded = self._runnable(items)
        if not items:
            return self._nothing_to_score(bench, "lifebench", excluded)
        outputs = self._generate_items(bench, items)
        samples = [self._sample(it, out, lifebench_count(out["text"])) for it, out in zip(items, outputs)]
        triples = [(x["control"], x["target"], x["length"]) for x in samples]
        result = lifebench_aggregate(triples)
        result["ci95"] = self._cis(triples, lifebench_headline, strata=lambda x: (x[0], x[1]))
        langs = sorted({x["lang"] for x in samples})
        if len(langs) > 1:
            result["per_lang"] = {
                lang: lifebench_aggregate((x["control"], x["target"], x["length"]) for x in samples if x["lang"] == lang)
                for lang in langs
            }
        result["n"] = len(samples)
        result["truncated"] = sum(x["truncated"] for x in samples)
        result.update(self._cost(samples))
        return {"metrics": result, "samples": samples, "counter": "lifebench", **excluded}

    def longbench_write(self, bench: str, items: list[B.EvalItem]) -> dict:
        items, excluded = self._runnable(items)
        if not items:
            return self._nothing_to_score(bench, "longbench-write", excluded)
        outputs = self._generate_items(bench, items)
        samples = [self._sample(it, out, longbench_write_count(out["text"])) for it, out in zip(items, outputs)]
        for x in samples:
            x["S_l"] = longbench_sl(x["length"], x["target"])
        per_length: dict[int, list[float]] = {}
        for x in samples:
            per_length.setdefault(x["target"], []).append(x["S_l"])
        mean_sl = lambda xs: {"S_l": sum(x["S_l"] for x in xs) / len(xs)}  # noqa: E731
        metrics = {"S_l": mean_sl(samples)["S_l"], "n": len(samples), "ci95": self._cis(samples, mean_sl),
                   "per_length": {t: sum(v) / len(v) for t, v in sorted(per_length.items())},
                   "truncated": sum(x["truncated"] for x in samples), **self._cost(samples)}
        return {"metrics": metrics, "samples": samples, "counter": "longbench-write", **excluded}

    def ruler_tlg(self, bench: str, items: list[B.EvalItem]) -> dict:
        items, excluded = self._runnable(items)
        if not items:
            return self._nothing_to_score(bench, "ruler", excluded)
        outputs = self._generate_items(bench, items)
        samples = []
        for it, out in zip(items, outputs):
            samples.append({**self._sample(it, out, ruler_count(out["text"])), "target_label": it.meta["target_label"]})
        metrics = ruler_aggregate((x["target_label"], x["length"]) for x in samples)
        pooled = lambda xs: {k: v for k, v in ruler_aggregate((x["target_label"], x["length"]) for x in xs)["all"].items()  # noqa: E731
                             if k in ("PM", "FM")}
        if samples:
            metrics["ci95"] = self._cis(samples, pooled)
        metrics.update(self._cost(samples))
        return {"metrics": metrics, "samples": samples, "counter": "ruler", **excluded}

    def lenctrl(self, bench: str, items: list[B.EvalItem]) -> dict:
        items, excluded = self._runnable(items)
        if not items:
            return self._nothing_to_score(bench, "lenctrl", excluded)
        outputs = self._generate_items(bench, items)
        samples = [{**self._sample(it, out, lenctrl_count(out["text"], it.meta["level"])), "level": it.meta["level"]}
                   for it, out in zip(items, outputs)]
        mae = lambda xs: {"MAE": mean_absolute_error((x["length"], x["target"]) for x in xs)}  # noqa: E731
        metrics = {"MAE": mae(samples)["MAE"], "n": len(samples), "ci95": self._cis(samples, mae), "per_level": {}}
        for level in sorted({x["level"] for x in samples}):
            sel = [x for x in samples if x["level"] == level]
            metrics["per_level"][level] = {"MAE": mean_absolute_error((x["length"], x["target"]) for x in sel),
                                           "n": len(sel)}
        metrics["note"] = "stand-in splitter (no public LenCtrl-Bench code): not guaranteed to match the paper"
        metrics.update(self._cost(samples))
        return {"metrics": metrics, "samples": samples, "counter": "lenctrl", **excluded}

    def counting(self, bench: str) -> dict:
        """The cognition probe: can the model count the words of a text (references and its own
        outputs), asked exactly as LARFT's awareness task asks it?"""
        texts = counting_texts()
        own_targets = [10, 20, 40, 80]
        instructions = B.ruler_instructions()
        rng = random.Random(self.settings.seed)
        own_jobs = []
        for i in range(self.settings.counting_own):
            target = own_targets[i % len(own_targets)]
            prompt = f"{rng.choice(instructions)} Answer in about {target} words."
            own_jobs.append((f"own-{i}", [{"role": "user", "content": prompt}], self.settings.max_new_tokens(target, metric="sample")))
        own = self.generate(f"{bench}-own-text", own_jobs)
        texts += [{"id": job_id, "kind": "own", "text": own[job_id]["text"]} for job_id, _, _ in own_jobs
                  if own[job_id]["text"].strip()]
        if self.settings.limit is not None:
            texts = texts[: self.settings.limit]
        jobs = [(t["id"], [{"role": "user", "content": counting_instruction(t["text"])}], 24) for t in texts]
        answers = self.generate(bench, jobs)
        samples = []
        for t in texts:
            truth = count_words(t["text"])
            guess = parse_count(answers[t["id"]]["text"])
            samples.append({"id": t["id"], "kind": t["kind"], "truth": truth, "guess": guess,
                            "answer": answers[t["id"]]["text"][:200]})
        metrics: dict[str, Any] = counting_metrics(samples)
        metrics["ci95"] = self._cis(samples, lambda xs: {k: v for k, v in counting_metrics(xs).items()
                                                         if k in ("format_rate", "within10_rate", "mae_parsed")})
        for kind in ("reference", "own"):
            sel = [x for x in samples if x["kind"] == kind and x["guess"] is not None]
            metrics[f"mae_{kind}"] = mean_absolute_error((x["guess"], x["truth"]) for x in sel) if sel else None
        metrics["definitions"] = COUNTING_DEFINITIONS
        return {"metrics": metrics, "samples": samples, "counter": "larft-words"}

    def retention(self, bench: str) -> dict:
        """Perplexity on fixed reference texts shipped with larft (lower is better; compare a
        checkpoint with its base model)."""
        import torch

        texts = reference_texts()
        total_nll, total_tokens, per_text = 0.0, 0, {}
        self.model.eval()
        with torch.no_grad():
            for t in texts:
                ids = self.tokenizer(t["text"], return_tensors="pt", add_special_tokens=False)["input_ids"]
                ids = ids.to(self.model.device)
                out = self.model(input_ids=ids, labels=ids)
                n = ids.size(1) - 1
                total_nll += out.loss.item() * n
                total_tokens += n
                per_text[t["id"]] = math.exp(out.loss.item())
        return {"metrics": {"perplexity": math.exp(total_nll / total_tokens), "tokens": total_tokens,
                            "per_text": per_text}, "samples": [], "counter": "tokens"}


COUNTING_DEFINITIONS = {
    "format_rate": "share of texts answered in the <word_count>N</word_count> format",
    "mae_parsed": "mean |counted - true| words over the answers in the format (the headline, with format_rate)",
    "within10_rate": "share of ALL texts counted within 10% of the truth (an unparsable answer is a miss)",
    "exact_rate": "share of ALL texts counted exactly",
    "mae_all": "mean |counted - true| over all texts, an unparsable answer counted as 0: for a model that never "
               "answers in the format this is the mean length of the texts, not a counting error",
}


def counting_metrics(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The counting probe's figures (see COUNTING_DEFINITIONS)."""
    n = len(samples)
    parsed = [x for x in samples if x["guess"] is not None]
    return {
        "n": n,
        "format_rate": len(parsed) / n if n else None,
        "mae_parsed": mean_absolute_error((x["guess"], x["truth"]) for x in parsed) if parsed else None,
        "within10_rate": sum(abs(x["guess"] - x["truth"]) <= 0.1 * x["truth"] for x in parsed) / n if n else None,
        "exact_rate": sum(x["guess"] == x["truth"] for x in parsed) / n if n else None,
        "mae_all": mean_absolute_error((x["guess"] or 0, x["truth"]) for x in samples) if n else None,
    }


def reference_texts() -> list[dict[str, str]]:
    path = resources.files("larft.eval") / "data" / "reference_texts.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def counting_texts() -> list[dict[str, str]]:
    """Prefixes of the reference texts cut at 10, 25, 50, 100 and 150 words: known lengths."""
    out = []
    for t in reference_texts():
        words = t["text"].split()
        for n in (10, 25, 50, 100, 150):
            if n <= len(words):
                out.append({"id": f"ref-{t['id']}-{n}", "kind": "reference", "text": " ".join(words[:n])})
    return out


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
            raise ValueError("--lm-eval-tasks needs lm-evaluation-harness: pip install lm-eval")
    for name in benches:
        if name not in NAMED_BENCHES:
            raise ValueError(f"unknown benchmark {name!r}; expected one of {', '.join(NAMED_BENCHES)}")
    # Build and check every prompt set before loading the model: bad input fails fast.
    plan: list[tuple[str, str, list[B.EvalItem] | None]] = []  # (name, Evaluator method, items)
    for name in benches:
        if name in B.BENCH_FILES:
            rel, loader = B.BENCH_FILES[name]
            items = select(loader(B.benchmark_data_dir() / rel), settings, name)
            plan.append((name, "longbench_write" if name == "longwrite-ruler" else "lifebench", items))
        elif name == "ruler-tlg":
            plan.append((name, "ruler_tlg", select(B.ruler_tlg_items(B.ruler_instructions()), settings, name)))
        else:
            plan.append((name, name, None))
    for path, fmt in bench_files or []:
        if fmt not in B.FORMATS:
            raise ValueError(f"unknown --format {fmt!r}; expected one of {', '.join(B.FORMATS)}")
        name = f"{fmt}:{Path(path).stem}"
        method = {"longbench-write": "longbench_write", "lenctrl": "lenctrl"}.get(fmt, "lifebench")
        plan.append((name, method, select(B.FORMATS[fmt](Path(path)), settings, name)))
    if not plan and not lm_eval_tasks:
        raise ValueError("nothing to evaluate: give --bench NAME and/or --bench-file PATH --format FMT")
    if settings.best_of < 1:
        raise ValueError(f"--best-of must be >= 1, got {settings.best_of}")
    if settings.best_of > 1:  # every prompt best-of-N would score must have a unit it can count, before any model
        for name, _, items in plan:
            for it in items or []:
                length_row(it, name)

    evaluator = Evaluator(model, out_dir, settings, trust_remote_code)
    results: dict[str, Any] = {
        "model": model, "model_path": evaluator.model_path, "settings": asdict(settings), "versions": versions(),
        "device": evaluator.device, "dtype": evaluator.dtype,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "benchmarks": {},
    }
    for name, method, items in plan:
        t0 = time.perf_counter()
        run = getattr(evaluator, method)
        results["benchmarks"][name] = run(name) if items is None else run(name, items)
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
        raise ValueError("--lm-eval-tasks needs lm-evaluation-harness: pip install lm-eval") from None
    args = f"pretrained={model_path},dtype={dtype},trust_remote_code={trust_remote_code}"
    task_manager = None
    if include_path:
        from lm_eval.tasks import TaskManager

        task_manager = TaskManager(include_path=include_path)
    out = lm_eval.simple_evaluate(model="hf", model_args=args, tasks=tasks, limit=limit, device=device,
                                  task_manager=task_manager)
    return {"tasks": tasks, "results": out["results"]}

