"""Best-of-N as a layer around an eval generator (`larft eval --best_of N`): every prompt is
sampled N times (sample k is the job `id#k`, cached on its own) and the answer with the highest
length reward is kept (ties: the first), scored as `larft.best_of` scores it: cut samples by the
rule of an answer that ran on."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Sequence

from larft.errors import UserError
from larft.generation import Generation
from larft.length import final_text

if TYPE_CHECKING:
    from larft.eval.benchmarks import EvalItem
    from larft.eval.generators import Generator, Job, Sampling


def length_row(item: EvalItem, bench: str) -> dict[str, Any]:
    """The length instruction of an eval prompt as larft's reward reads it (best-of-N picks by it):
    its target and control, counted in words (larft's counter: a CJK character is a word)."""
    level = item.meta.get("level", "word")
    if level != "word":
        raise UserError(f"--best-of: {bench} prompt {item.id} asks for {item.target} {level}s; best-of-N picks by "
                        "larft's length reward, which counts words, characters or tokens, not that unit")
    return {"target": item.target, "constraint": item.control, "unit": "words"}


@dataclass
class Chosen(Generation):
    """The chosen sample of a prompt (raw text), what all N cost and every sample's reward."""

    gen_tokens: int = 0
    rewards: list[float] = field(default_factory=list)


class BestOfN:
    """`rows`: job id -> its length instruction (`length_row`). Texts are scored with the reasoning
    `delimiters` stripped."""

    def __init__(self, inner: Generator, n: int, rows: dict[str, dict[str, Any]], tokenizer: Any,
                 reasoning: tuple[tuple[str, str], ...]):
        self.inner, self.n, self.rows, self.tokenizer, self.reasoning = inner, n, rows, tokenizer, reasoning

    def generate(self, jobs: Sequence[Job], sampling: Sampling) -> list[Chosen]:
        from larft.best_of import pick_best, row_rewards

        n = self.n
        draws = [replace(job, id=f"{job.id}#{k}", draw=k) for job in jobs for k in range(n)]
        samples = self.inner.generate(draws, replace(sampling, do_sample=True, draws=n))
        chosen = []
        for i, job in enumerate(jobs):
            group = samples[i * n:(i + 1) * n]
            texts = [final_text(g.text, self.reasoning) for g in group]
            rewards = row_rewards(texts, self.rows[job.id], tokenizer=self.tokenizer, reasoning=(),  # already stripped
                                  truncated=[g.truncated for g in group])
            best = group[pick_best(rewards)]
            chosen.append(Chosen(best.text, best.new_tokens, best.truncated, best.max_new_tokens,
                                 gen_tokens=sum(g.new_tokens for g in group), rewards=rewards))
        return chosen
