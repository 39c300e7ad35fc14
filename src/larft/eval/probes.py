"""The two probes of `larft eval` that are not length benchmarks: `counting` (can the model
count the words of a text, asked as LARFT's awareness task asks it?) and `retention`
(perplexity on fixed reference texts: compare a checkpoint with its base model)."""

from __future__ import annotations

import json
import math
import random
from importlib import resources
from typing import Any

from larft.eval import benchmarks as B
from larft.eval.metrics import mean_absolute_error
from larft.eval.tasks import Benchmark, EvalRun

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


class Counting(Benchmark):
    """Reference texts of known length and the model's own answers, each counted by the model
    (larft's awareness prompt) and by larft's word counter (the truth)."""

    counter = "larft-words"
    own_targets = (10, 20, 40, 80)

    def run(self, ev: EvalRun, name: str, items: list[B.EvalItem] | None = None) -> dict[str, Any]:
        from larft.awareness import counting_instruction, parse_count
        from larft.eval.generators import Job
        from larft.length import count_words

        s = ev.settings
        texts = counting_texts()
        instructions = B.ruler_instructions()
        rng = random.Random(s.seed)
        own_jobs = []
        for i in range(s.counting_own):
            target = self.own_targets[i % len(self.own_targets)]
            prompt = f"{rng.choice(instructions)} Answer in about {target} words."
            own_jobs.append(Job(f"own-{i}", [{"role": "user", "content": prompt}], s.max_new_tokens(target, metric="sample")))
        own = ev.generate(f"{name}-own-text", own_jobs)
        texts += [{"id": job.id, "kind": "own", "text": own[job.id]["text"]} for job in own_jobs
                  if own[job.id]["text"].strip()]
        if s.limit is not None:
            texts = texts[: s.limit]
        jobs = [Job(t["id"], [{"role": "user", "content": counting_instruction(t["text"])}], 24) for t in texts]
        answers = ev.generate(name, jobs)
        samples = []
        for t in texts:
            truth = count_words(t["text"])
            guess = parse_count(answers[t["id"]]["text"])
            samples.append({"id": t["id"], "kind": t["kind"], "truth": truth, "guess": guess,
                            "answer": answers[t["id"]]["text"][:200]})
        metrics: dict[str, Any] = counting_metrics(samples)
        metrics["ci95"] = self.cis(s, samples, lambda xs: {k: v for k, v in counting_metrics(xs).items()
                                                           if k in ("format_rate", "within10_rate", "mae_parsed")})
        for kind in ("reference", "own"):
            sel = [x for x in samples if x["kind"] == kind and x["guess"] is not None]
            metrics[f"mae_{kind}"] = mean_absolute_error((x["guess"], x["truth"]) for x in sel) if sel else None
        metrics["definitions"] = COUNTING_DEFINITIONS
        return {"metrics": metrics, "samples": samples, "counter": self.counter}


class Retention(Benchmark):
    """Perplexity on fixed reference texts shipped with larft (lower is better)."""

    counter = "tokens"

    def run(self, ev: EvalRun, name: str, items: list[B.EvalItem] | None = None) -> dict[str, Any]:
        import torch

        texts = reference_texts()
        total_nll, total_tokens, per_text = 0.0, 0, {}
        model = ev.model
        model.eval()
        with torch.no_grad():
            for t in texts:
                ids = ev.tokenizer(t["text"], return_tensors="pt", add_special_tokens=False)["input_ids"]
                ids = ids.to(model.device)
                out = model(input_ids=ids, labels=ids)
                n = ids.size(1) - 1
                total_nll += out.loss.item() * n
                total_tokens += n
                per_text[t["id"]] = math.exp(out.loss.item())
        return {"metrics": {"perplexity": math.exp(total_nll / total_tokens), "tokens": total_tokens,
                            "per_text": per_text}, "samples": [], "counter": self.counter}
