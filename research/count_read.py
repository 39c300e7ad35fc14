"""Does a model count? Its teacher-forced count of fixed texts, read at the count's positions.

    .venv/bin/python research/count_read.py --texts $LARFT_HOME/sweep/lam-0/length_check.json \
        --model default --model $LARFT_HOME/sweep/num-0.3 --model $LARFT_HOME/sweep/lam-0.3

The counting probe of `larft eval` asks the model to *write* `<word_count>N</word_count>`: a model
trained with `awareness_loss_on: number` is never taught the tags, so the probe cannot see whether
it learned to count. This reads the count the way the trainer's `awareness_count_error` does (the
counting example of `build_awareness_batch`, the argmax at the count's own label positions given the
right tokens before, `awareness.read_count`), on the same texts for every model: by default the base
model's held-out answers of a sweep (`length_check.json` "before"). Per model: mean relative error
(1 for a non-number), the share within 10%, MAE over numbers, how many distinct counts it gives
(a model that answers one number for every text has not learned to count), and the rank correlation
of its counts with the truth. Writes research/results/count_read.json (--out), keeping the models
read earlier on the same texts (a model's run folder may be gone by the next read).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
from pathlib import Path

import torch

from larft.awareness import IGNORE_INDEX, awareness_loss, build_awareness_batch, count_error, read_count
from larft.models import load_model, load_tokenizer, resolve_model
from recipe_sweep import spearman  # research/, beside this file: one rank correlation

ROOT = Path(__file__).resolve().parents[1]


def texts_from(path: Path) -> list[str]:
    """The texts to count: a sweep's length_check.json ("before" answers) or a .jsonl with "text"."""
    if path.suffix == ".json":
        return [row["text"] for row in json.loads(path.read_text(encoding="utf-8"))["before"]]
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def count_read(model_name: str, texts: list[str], batch_size: int = 8) -> dict:
    tokenizer = load_tokenizer(resolve_model(model_name))
    model = load_model(resolve_model(model_name)).eval()
    return {"model": model_name, **read_counts(model, tokenizer, texts, batch_size)}


def read_counts(model, tokenizer, texts: list[str], batch_size: int = 8) -> dict:
    """A loaded model's teacher-forced count of `texts` (in eval mode: the caller sets it)."""
    pairs = []
    for start in range(0, len(texts), batch_size):
        batch = build_awareness_batch(texts[start:start + batch_size], ["words"] * len(texts[start:start + batch_size]),
                                      tokenizer)
        predicted: dict[int, list[int]] = {}
        with torch.no_grad():
            awareness_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"],
                           batch["prefix_length"], predictions=predicted)
        for row, ids in sorted(predicted.items()):
            label = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX].tolist()
            pairs.append(read_count(tokenizer, label, ids))
    errors = [count_error(t, g) for t, g in pairs]
    numbers = [(t, g) for t, g in pairs if g is not None]
    return {
        "n": len(pairs),
        "error_mean": statistics.fmean(errors),
        "within10": sum(e <= 0.1 for e in errors) / len(errors),
        "mae_numbers": statistics.fmean(abs(g - t) for t, g in numbers) if numbers else None,
        "numbers_rate": len(numbers) / len(pairs),
        "distinct_counts": len({g for _, g in numbers}),
        "spearman": spearman([t for t, _ in numbers], [g for _, g in numbers]),
        "truth_range": [min(t for t, _ in pairs), max(t for t, _ in pairs)],
        "counts": [[t, g] for t, g in pairs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", required=True, type=Path, help="length_check.json of a sweep, or a .jsonl with text")
    parser.add_argument("--model", action="append", required=True, help="repeat: each model is read on the same texts")
    parser.add_argument("--out", type=Path, default=ROOT / "research" / "results" / "count_read.json")
    args = parser.parse_args()
    texts = texts_from(args.texts)
    rows = []
    for name in args.model:
        r = count_read(name, texts)
        rows.append(r)
        rho = "-" if r["spearman"] is None else f"{r['spearman']:.2f}"
        print(f"{name}: error {r['error_mean']:.2f}, within 10% {r['within10']:.0%}, MAE {r['mae_numbers']}, "
              f"numbers {r['numbers_rate']:.0%}, {r['distinct_counts']} distinct counts, spearman {rho} "
              f"(truth {r['truth_range'][0]}..{r['truth_range'][1]}, n={r['n']})", flush=True)
    digest = texts_digest(texts)
    rows = merge_earlier(args.out, digest, rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "research/count_read.py " + " ".join(
        f"--model {r['model']}" for r in rows), "texts": str(args.texts), "texts_sha256": digest,
        "models": rows}, indent=2) + "\n")


def texts_digest(texts: list[str]) -> str:
    return hashlib.sha256(json.dumps(texts).encode()).hexdigest()


def merge_earlier(out: Path, digest: str, rows: list[dict]) -> list[dict]:
    """The earlier file's models that were not read again, first, when they read the same texts (by
    digest; a file written before the digest was kept: by the same true counts in the same order);
    otherwise only the new rows."""
    if not out.exists():
        return rows
    earlier = json.loads(out.read_text(encoding="utf-8"))
    truth = [t for t, _ in rows[0]["counts"]]
    same = (earlier.get("texts_sha256") == digest if earlier.get("texts_sha256")
            else all([t for t, _ in r["counts"]] == truth for r in earlier.get("models", [])))
    if not same:
        return rows
    new = {r["model"] for r in rows}
    return [r for r in earlier["models"] if r["model"] not in new] + rows

if __name__ == "__main__":
    main()
