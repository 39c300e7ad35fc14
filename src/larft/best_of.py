"""Best-of-N: sample N answers per prompt and keep the one whose length reward is highest.

The cheapest thing a practitioner tries before training for length control, so larft offers
it as a product feature (`larft generate --best_of N`, `larft eval --best_of N`) and as the
baseline LARFT has to beat at 1/N of the inference cost. The score is LARFT's own length
reward (`length_score`: the row's constraint, unit and target, the refusal floor and the
degenerate guard as in `LengthReward`), so best-of-N picks by exactly the signal GRPO trains on.
The same sample-and-score step feeds the RFT and DPO baselines (`larft.baselines`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from larft.generation import Generation
from larft.length import DEFAULT_REASONING, final_text
from larft.length_spec import LengthSpec
from larft.rewards import REFUSAL_FLOOR, length_score


def pick_best(rewards: Sequence[float]) -> int:
    """Index of the highest reward; ties go to the first (deterministic, no preference for later samples)."""
    if not rewards:
        raise ValueError("best-of-N: no samples to choose from")
    return max(range(len(rewards)), key=lambda i: (rewards[i], -i))


def pick_worst(rewards: Sequence[float]) -> int:
    """Index of the lowest reward; ties go to the first."""
    if not rewards:
        raise ValueError("best-of-N: no samples to choose from")
    return min(range(len(rewards)), key=lambda i: (rewards[i], i))


def row_rewards(texts: Sequence[str], row: dict[str, Any], *, tokenizer: Any = None, degenerate_guard: bool = True,
                refusal_floor: float = REFUSAL_FLOOR,
                reasoning: tuple[tuple[str, str], ...] = DEFAULT_REASONING,
                truncated: Sequence[bool] | None = None) -> list[float]:
    """The length reward of each text for one row (its target, constraint and unit; see `length_score`);
    a text cut at its budget (`truncated`) gets the reward of one that ran on (`truncated_reward`)."""
    spec = LengthSpec.of(row)
    target = spec.required_goal()
    cut = [False] * len(texts) if truncated is None else list(truncated)
    return [length_score(text, target, unit=spec.unit, constraint=spec.constraint,
                          tokenizer=tokenizer, degenerate_guard=degenerate_guard, refusal_floor=refusal_floor,
                          reasoning=reasoning, truncated=was_cut) for text, was_cut in zip(texts, cut)]


@dataclass
class SampleGroup:
    """The N samples of one prompt, their rewards and the chosen one. `samples[i].text` is the raw
    completion (reasoning kept: what a trainer would train on); `text` is the chosen final answer."""

    row: dict[str, Any]
    samples: list[Generation]
    rewards: list[float]
    reasoning: tuple[tuple[str, str], ...] = DEFAULT_REASONING

    @property
    def best_index(self) -> int:
        return pick_best(self.rewards)

    @property
    def best(self) -> Generation:
        return self.samples[self.best_index]

    @property
    def text(self) -> str:
        """The chosen answer as a user sees it (reasoning and markers stripped)."""
        return final_text(self.best.text, self.reasoning)

    @property
    def reward(self) -> float:
        return self.rewards[self.best_index]

    @property
    def gen_tokens(self) -> int:
        """Tokens generated for this prompt, every sample counted: the inference cost of best-of-N."""
        return sum(s.new_tokens for s in self.samples)


def sample_groups(model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], n: int, *,
                  max_new_tokens: int | Sequence[int], temperature: float = 0.7, top_p: float = 0.8,
                  top_k: int = 0, batch_size: int = 8, chat_template_kwargs: dict | None = None,
                  reasoning: tuple[tuple[str, str], ...] = DEFAULT_REASONING, degenerate_guard: bool = True,
                  refusal_floor: float = REFUSAL_FLOOR, generate: Callable[..., list[Generation]] | None = None,
                  ) -> list[SampleGroup]:
    """Sample `n` answers for every row (each prompt repeated n times in the batch) and score
    them with the length reward. `rows` are training-style rows: `prompt` (chat messages) and
    `target` / `target_range`, optional `constraint` and `unit`. `max_new_tokens` is one budget
    or one per row. `generate` defaults to `larft.generation.generate_records` (a stand-in
    with its signature can be passed, e.g. in tests)."""
    if n < 1:
        raise ValueError(f"best-of-N: N must be >= 1, got {n}")
    if generate is None:
        from larft.generation import generate_records as generate
    budgets = [max_new_tokens] * len(rows) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    if len(budgets) != len(rows):
        raise ValueError(f"{len(budgets)} budgets for {len(rows)} prompts")
    for row in rows:
        LengthSpec.of(row).required_goal()  # a row without a target fails before anything is generated
    prompts = [row["prompt"] for row in rows for _ in range(n)]
    records = generate(model, tokenizer, prompts, max_new_tokens=[b for b in budgets for _ in range(n)],
                       batch_size=batch_size, do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k,
                       chat_template_kwargs=chat_template_kwargs, reasoning=())  # raw text: scored after stripping
    if len(records) != len(prompts):
        raise RuntimeError(f"generation returned {len(records)} records for {len(prompts)} prompts")
    groups = []
    for i, row in enumerate(rows):
        samples = list(records[i * n:(i + 1) * n])
        rewards = row_rewards([s.text for s in samples], row, tokenizer=tokenizer, degenerate_guard=degenerate_guard,
                              refusal_floor=refusal_floor, reasoning=reasoning, truncated=[s.truncated for s in samples])
        groups.append(SampleGroup(row, samples, rewards, reasoning))
    return groups


def best_of_n(model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], n: int, **kwargs: Any) -> list[SampleGroup]:
    """Best-of-N generation: for every row, `n` sampled answers and the one with the highest
    length reward (ties: the first). `group.text` is the chosen answer, `group.gen_tokens` what
    it cost. Keyword arguments as `sample_groups` (max_new_tokens, temperature, top_p, ...)::

        from larft.best_of import best_of_n
        row = {"prompt": [{"role": "user", "content": "Describe tea in about 40 words."}], "target": 40}
        print(best_of_n(model, tokenizer, [row], 8, max_new_tokens=128)[0].text)
    """
    return sample_groups(model, tokenizer, rows, n, **kwargs)


__all__ = ["SampleGroup", "best_of_n", "pick_best", "pick_worst", "row_rewards", "sample_groups"]
