"""Can the bundled model learn to count at all? LARFT's counting task alone, on many more examples.

    .venv/bin/python research/counting_warmup.py [--steps 200] [--learning-rate 3e-5] [--replay 8] \
        [--length-check $LARFT_HOME/sweep/lam-0/length_check.json]

A 40-step LARFT run gives the awareness loss 640 examples at a weight that averages ~0.15, and the
best trained counter so far reads one count in five within 10% (research/notes.md). Whether that is
the budget or the 135M model's capacity is what this measures: supervised counting only (no RL),
the same examples and loss as the trainer's awareness task (`build_awareness_batch`,
`awareness_loss`), full weight, thousands of examples.

1. Texts: the base model's sampled answers to larft's own training prompts (topics disjoint from
   every evaluation prompt), cut at a random word, 5..160 words, so every length is seen; cached in
   $LARFT_HOME/counting_warmup/<model>/texts.jsonl. The answers of the last `--held-out` prompts are kept
   apart: each cut twice, they are the count read's texts.
2. A transformers Trainer whose loss is the awareness loss (label tokens only, the label is
   `<word_count>N</word_count>` + the turn's end), `--steps` x `--batch-size` examples. With
   `--replay N`, each step also trains N of those sampled answers as ordinary answers to their prompts
   (counting alone teaches short answers; replaying its own keeps their length; research/notes.md).
3. Every `--read-every` steps, the model's teacher-forced count of the held-out texts
   (`count_read.read_counts`: error, within 10%, rank correlation with the truth), step 0 included.
4. The final model is saved under $LARFT_HOME/counting_warmup/<model>/ (a rerun skips training when it
   is there) and scored by `larft eval`'s counting probe, the experiment's `counting_within10` /
   `counting_mae_parsed` (reference texts and the model's own answers; it writes, not reads).
5. With `--length-check` (a sweep's `length_check.json`): the trained model's greedy answers to that
   sweep's held-out prompts, scored as the sweep scores its variants, next to the file's "before"
   (the base model): does learning to count change how long the model writes?

Writes research/results/counting_warmup.json (--out) and its curve, research/img/counting_warmup.png (--plot).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from count_read import read_counts  # research/, beside this file
from larft.awareness import awareness_loss, build_awareness_batch, left_pad, turn_end
from larft.data import generate_rows
from larft.generation import generate, render_chat
from larft.length import count_words
from larft.models import larft_home, load_model, load_tokenizer, resolve_model

ROOT = Path(__file__).resolve().parents[1]
_WORD = re.compile(r"\S+")


def cut_at_word(text: str, n: int) -> str:
    """`text` up to the end of its n-th whitespace-separated piece, formatting kept."""
    pieces = list(_WORD.finditer(text))
    return text if n >= len(pieces) else text[: pieces[n - 1].end()]


#: the sampled answers' token budget: an answer this long was cut, not finished
TEXT_TOKENS = 224


def training_prompts(n: int, seed: int) -> list[list[dict]]:
    """`n` of larft's generated training prompts (16..128 words asked; chat messages), the same for
    the same seed."""
    return [r["prompt"] for r in generate_rows(n, targets=(16, 32, 64, 128), constraints=("equal",),
                                               styles=("plain", "requirement"), seed=seed)]


def sample_texts(model_name: str, n: int, seed: int, path: Path) -> list[str]:
    """The base model's sampled answers to `training_prompts(n, seed)`, cached in `path` (one JSON
    object per line, in prompt order)."""
    if path.exists():
        texts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(texts) == n:
            return texts
    tokenizer, model = load_tokenizer(model_name), load_model(model_name)
    torch.manual_seed(seed)
    texts = generate(model, tokenizer, training_prompts(n, seed), max_new_tokens=TEXT_TOKENS, batch_size=32,
                     do_sample=True, temperature=1.0, top_p=0.95, progress=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return texts


def random_cuts(texts: list[str], k: int, rng: random.Random, lo: int = 5, hi: int = 160) -> list[str]:
    """`k` prefixes of texts drawn at random, each cut at a random word in lo..min(hi, its length)."""
    usable = [t for t in texts if len(_WORD.findall(t)) >= lo]  # cut by pieces; the label is counted
    if not usable:
        raise ValueError(f"no sampled text has {lo} words or more")
    out = []
    for _ in range(k):
        text = rng.choice(usable)
        out.append(cut_at_word(text, rng.randint(lo, min(hi, len(_WORD.findall(text))))))
    return out


def build_replay_batch(prompts: list[list[dict]], answers: list[str], tokenizer) -> dict:
    """Ordinary examples: each prompt's chat turn followed by the base model's own answer, left-padded,
    labels on the answer only (and on the turn's end when the answer finished inside TEXT_TOKENS).
    Rehearsing its own answers keeps the model's answer lengths while it learns to count: counting
    examples alone end every turn after a short label, and the model learns to write short."""
    end_ids = tokenizer(turn_end(tokenizer), add_special_tokens=False)["input_ids"]
    rows = []
    for prompt, answer in zip(prompts, answers):
        prompt_ids = tokenizer(render_chat(tokenizer, prompt), add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        finished = len(answer_ids) < TEXT_TOKENS - 4  # a few tokens' margin: decoded text re-tokenizes ~alike
        rows.append((prompt_ids, answer_ids + (end_ids if finished else [])))
    return left_pad(rows, tokenizer)


class CountingTrainer(Trainer):
    """A Trainer whose loss is LARFT's awareness loss on the counting batch of each step, plus, when
    the step has one, the same masked cross-entropy on its replay batch (the model's own answers)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        count = inputs["count"]
        loss = awareness_loss(model, count["input_ids"], count["attention_mask"], count["labels"],
                              count["prefix_length"])
        if "replay" in inputs:
            replay = inputs["replay"]
            loss = loss + awareness_loss(model, replay["input_ids"], replay["attention_mask"], replay["labels"])
        return (loss, None) if return_outputs else loss


class CountRead(TrainerCallback):
    """The teacher-forced count of the held-out texts every `every` steps (and before step 1)."""

    def __init__(self, tokenizer, texts: list[str], every: int):
        self.tokenizer, self.texts, self.every, self.curve = tokenizer, texts, every, []

    def read(self, model, step: int) -> None:
        was_training = model.training
        model.eval()
        r = read_counts(model, self.tokenizer, self.texts)
        model.train(was_training)
        self.curve.append({"step": step, **{k: v for k, v in r.items() if k != "counts"}})
        rho = "-" if r["spearman"] is None else f"{r['spearman']:.2f}"
        print(f"[count read] step {step}: error {r['error_mean']:.2f}, within 10% {r['within10']:.0%}, "
              f"{r['distinct_counts']} distinct counts, spearman {rho}", flush=True)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.read(model, 0)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self.read(model, state.global_step)


def length_following(model_path: str, check: Path, max_new_tokens: int, out_dir: Path) -> dict:
    """The sweep's validation figures of `check`'s "before" answers and of `model_path`'s greedy
    answers to the same prompts: the sweep's own length check (`LengthCheckCallback`, same budget;
    its "before" taken from `check`, its "after" written to `out_dir`), scored by `recipe_sweep.validation`."""
    from recipe_sweep import validation  # research/, beside this file

    from larft.callbacks import LengthCheckCallback

    before = json.loads(check.read_text(encoding="utf-8"))["before"]
    rows = [{"prompt": [{"role": "user", "content": r["prompt"]}], "constraint": r["constraint"], "unit": r["unit"],
             "target" if not isinstance(r["target"], list) else "target_range": r["target"]} for r in before]
    tokenizer, model = load_tokenizer(model_path), load_model(model_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    checker = LengthCheckCallback(rows, tokenizer, max_new_tokens, str(out_dir))
    checker.path.write_text(json.dumps({"before": before}), encoding="utf-8")
    checker.before(model)  # read back from the file: the base model's answers are not generated again
    checker.finish(model)
    return {"file": str(check), "max_new_tokens": max_new_tokens, "before": validation(checker.results["before"]),
            "after": validation(checker.results["after"])}


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def plot_curve(curve: list[dict], batch_size: int, path: Path, replay: int = 0) -> None:
    """Count error and the share within 10% of the held-out texts against the examples seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seen = [r["step"] * batch_size for r in curve]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(seen, [r["error_mean"] for r in curve], "o-", label="count error (mean |guess - truth| / truth)")
    ax.plot(seen, [r["within10"] for r in curve], "s-", label="share counted within 10%")
    ax.axvline(640, color="grey", ls=":", lw=1)
    ax.text(640, 0.95, " a 40-step LARFT run's\n examples (at weight lambda)", fontsize=7, va="top")
    ax.set_xlabel("counting examples seen (supervised only, no RL)")
    ax.set_ylim(0, 1)
    what = f"Counting, {replay} own answers replayed a step" if replay else "Counting alone"
    ax.set_title(f"{what}: teacher-forced count of {curve[0]['n']} held-out texts", fontsize=10)
    ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--prompts", type=int, default=256, help="training prompts sampled once for texts")
    parser.add_argument("--held-out", type=int, default=32, help="of those, kept apart for the count read")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=3e-5)
    parser.add_argument("--replay", type=int, default=0,
                        help="per step, this many of the base model's own answers to training prompts as ordinary "
                             "examples beside the counting batch (keeps the answers' lengths)")
    parser.add_argument("--read-every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probe-own", type=int, default=24, help="the probe's own answers to count (the experiment's)")
    parser.add_argument("--probe-limit", type=int, default=None, help="count only the probe's first N texts")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="default $LARFT_HOME/counting_warmup; each model's texts and runs in a folder of its name")
    parser.add_argument("--length-check", type=Path, default=None,
                        help="a sweep's length_check.json: the trained model answers its held-out prompts too")
    parser.add_argument("--length-check-tokens", type=int, default=192, help="their budget (the sweep's)")
    parser.add_argument("--out", type=Path, default=ROOT / "research" / "results" / "counting_warmup.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "research" / "img" / "counting_warmup.png")
    args = parser.parse_args()
    if not 0 < args.held_out < args.prompts:
        parser.error(f"--held-out must be in 1..{args.prompts - 1}, got {args.held_out}")
    model_name = resolve_model(args.model)
    work = (args.work_dir or larft_home() / "counting_warmup") / Path(model_name).name
    texts = sample_texts(model_name, args.prompts, args.seed, work / "texts.jsonl")
    train_texts, held_texts = texts[: -args.held_out], texts[-args.held_out:]
    rng = random.Random(args.seed)
    read_texts = random_cuts(held_texts, 2 * args.held_out, rng)
    examples = random_cuts(train_texts, args.steps * args.batch_size, rng)
    prompts = training_prompts(args.prompts, args.seed)[: -args.held_out]
    replays = [rng.randrange(len(train_texts)) for _ in range(args.steps * args.replay)]
    steps = [{"texts": examples[i * args.batch_size:(i + 1) * args.batch_size],
              "replay": replays[i * args.replay:(i + 1) * args.replay]} for i in range(args.steps)]
    tokenizer = load_tokenizer(model_name)

    def collate(batch: list[dict]) -> dict:  # one item is one step's examples
        step = batch[0]
        out = {"count": build_awareness_batch(step["texts"], ["words"] * len(step["texts"]), tokenizer)}
        if step["replay"]:
            out["replay"] = build_replay_batch([prompts[i] for i in step["replay"]],
                                               [train_texts[i] for i in step["replay"]], tokenizer)
        return out

    replay_tag = f"-r{args.replay}" if args.replay else ""
    final = work / f"model-{args.steps}x{args.batch_size}{replay_tag}-lr{args.learning_rate:g}-seed{args.seed}"
    reader = CountRead(tokenizer, read_texts, args.read_every)
    t0 = time.perf_counter()
    if (final / "config.json").exists():
        print(f"[counting warm-up] trained model found, not training again: {final}", flush=True)
        saved = json.loads((final / "curve.json").read_text(encoding="utf-8"))
        reader.curve, train_minutes = saved["curve"], saved["train_minutes"]
    else:
        targs = TrainingArguments(
            output_dir=str(work / "run"), max_steps=args.steps, per_device_train_batch_size=1,
            learning_rate=args.learning_rate, lr_scheduler_type="constant_with_warmup", warmup_steps=10,
            logging_steps=5, save_strategy="no", report_to=[], remove_unused_columns=False, use_cpu=True,
            seed=args.seed, dataloader_drop_last=False,
        )
        trainer = CountingTrainer(model=load_model(model_name), args=targs, data_collator=collate,
                                  train_dataset=steps, callbacks=[reader])
        trainer.train()
        train_minutes = (time.perf_counter() - t0) / 60
        trainer.save_model(str(final))
        tokenizer.save_pretrained(str(final))
        (final / "curve.json").write_text(json.dumps({"curve": reader.curve, "train_minutes": train_minutes}))

    from larft.eval.runner import EvalSettings, run_eval

    probe = {}
    for tag, name in (("base", model_name), ("trained", str(final))):
        out = work / "probe" / (tag if tag == "base" else final.name)
        if (out / "results.json").exists():
            result = json.loads((out / "results.json").read_text(encoding="utf-8"))
        else:
            result = run_eval(name, ["counting"], str(out), EvalSettings(
                batch_size=16, max_new_tokens_cap=512, device="cpu", counting_own=args.probe_own,
                limit=args.probe_limit))
        m = result["benchmarks"]["counting"]["metrics"]
        probe[tag] = {k: m[k] for k in ("n", "format_rate", "within10_rate", "mae_parsed", "mae_reference",
                                          "mae_own", "ci95")}
        print(f"[counting probe] {tag}: format {m['format_rate']:.0%}, within 10% {m['within10_rate']:.0%}, "
              f"MAE {m['mae_parsed']}", flush=True)

    following = length_following(str(final), args.length_check, args.length_check_tokens,
                                 work / "length_check" / final.name) if args.length_check else None
    if following:
        b, a = following["before"], following["after"]
        print("[length check] base -> trained: " + ", ".join(
            f"{k} {_num(b[k])} -> {_num(a[k])}" for k in ("ls", "error", "target_length_spearman", "words_mean")),
            flush=True)
    truth = [count_words(t) for t in read_texts]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": "research/counting_warmup.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
            if k not in ("out", "work_dir", "plot") and v is not None),
        "model": args.model, "examples": args.steps * args.batch_size, "replay_examples": len(replays),
        "train_minutes": train_minutes,
        "read_texts": {"n": len(read_texts), "words_min": min(truth), "words_max": max(truth),
                       "words_median": statistics.median(truth)},
        "count_read_curve": reader.curve, "counting_probe": probe, "length_check": following,
    }, indent=2) + "\n")
    plot_curve(reader.curve, args.batch_size, args.plot, args.replay)
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
