"""The eval generation stack with a stand-in engine (no model): batching and per-batch seeds,
the cache layer (keys, resumption), the best-of-N layer; the benchmark registry; the names other
code imports from larft.eval.runner."""

import json

import pytest

from larft.errors import UserError
from larft.eval.best_of import BestOfN, Chosen
from larft.eval.cache import CachedGenerator, GenerationCache
from larft.eval.generators import Batched, Job, Sampling
from larft.generation import Generation
from tiny import tiny_tokenizer


class Engine:
    """Answers `words(n)` with n = the job's entry in `lengths` (default 3), records every call."""

    def __init__(self, lengths=None):
        self.lengths = lengths or {}
        self.calls = []

    def generate(self, jobs, sampling):
        self.calls.append(([j.id for j in jobs], sampling))
        out = []
        for j in jobs:
            n = self.lengths.get(j.id, 3)
            out.append(Generation(" ".join(f"w{i}" for i in range(n)), n + 1, n + 1 >= j.budget, j.budget))
        return out


def _jobs(budgets):
    return [Job(str(i), [{"role": "user", "content": "x " * (i + 1)}], b) for i, b in enumerate(budgets)]


def test_batches_keep_their_own_budgets_order_and_seeds():
    engine = Engine()
    batched = Batched(engine, tiny_tokenizer(), batch_size=2, max_batch_tokens=10_000)
    jobs = _jobs([40, 8, 30, 9, 20])
    records = batched.generate(jobs, Sampling(do_sample=True, seed=7))
    assert [r.max_new_tokens for r in records] == [40, 8, 30, 9, 20]  # in the jobs' order, each its own budget
    assert [len(ids) for ids, _ in engine.calls] == [2, 2, 1]
    assert [s.seed for _, s in engine.calls] == [7, 8, 9]  # batch k: seed + k
    assert engine.calls[0][0] == ["1", "3"]  # shortest prompt + budget first
    tight = Batched(Engine(), tiny_tokenizer(), batch_size=8, max_batch_tokens=1)
    assert all(len(b) == 1 for b in tight.batches(jobs))  # the padded-token cap splits batches too


def test_the_cache_layer_generates_what_it_lacks_and_saves_every_batch(tmp_path):
    engine = Engine()
    path = tmp_path / "generations.jsonl"
    key = lambda job: f"bench/{job.id}/greedy/max{job.budget}"  # noqa: E731
    layer = CachedGenerator(Batched(engine, tiny_tokenizer(), 2, 10_000), GenerationCache(path), key)
    first = layer.generate(_jobs([8, 9, 10]), Sampling())
    assert sum(len(ids) for ids, _ in engine.calls) == 3
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(x["key"] for x in lines) == ["bench/0/greedy/max8", "bench/1/greedy/max9", "bench/2/greedy/max10"]
    assert set(lines[0]) == {"key", "output", "max_new_tokens", "new_tokens", "truncated"}
    # resumed from the file: only the new job is generated, the old ones come back as they were
    again = CachedGenerator(Batched(engine, tiny_tokenizer(), 2, 10_000), GenerationCache(path), key)
    second = again.generate(_jobs([8, 9, 10, 11]), Sampling())
    assert engine.calls[-1][0] == ["3"] and sum(len(ids) for ids, _ in engine.calls) == 4
    assert second[:3] == first


def test_best_of_n_samples_every_prompt_n_times_and_keeps_the_best(tmp_path):
    engine = Engine({"a#0": 2, "a#1": 6, "a#2": 12, "b#0": 30, "b#1": 9, "b#2": 10})
    rows = {"a": {"target": 6, "constraint": "equal", "unit": "words"},
            "b": {"target": 10, "constraint": "equal", "unit": "words"}}
    layer = BestOfN(Batched(engine, tiny_tokenizer(), 8, 10_000), 3, rows, tiny_tokenizer(), ())
    jobs = [Job("a", [{"role": "user", "content": "x"}], 64), Job("b", [{"role": "user", "content": "y"}], 64)]
    a, b = layer.generate(jobs, Sampling(do_sample=False, seed=1))
    ids, sampling = engine.calls[0]
    assert sorted(ids) == ["a#0", "a#1", "a#2", "b#0", "b#1", "b#2"]
    assert sampling.do_sample and sampling.draws == 3  # best-of-N always samples; vLLM seeds the draws apart
    assert isinstance(a, Chosen) and a.text.split() == [f"w{i}" for i in range(6)] and a.rewards[1] == 1.0
    assert b.text.split() == [f"w{i}" for i in range(10)] and b.gen_tokens == 31 + 10 + 11


def test_the_registry_and_the_names_runner_exports():
    from larft.eval import runner
    from larft.eval.registry import FORMATS, NAMED, plan
    from larft.eval.settings import EvalSettings

    assert runner.NAMED_BENCHES == ("lifebench", "lifebench-label", "lifebench-refactor", "longwrite-ruler",
                                    "ruler-tlg", "counting", "retention")
    assert set(FORMATS) == {"lifebench", "lifebench-refactor", "longbench-write", "lenctrl"}
    assert {name: b.counter for name, b in NAMED.items()} == {
        "lifebench": "lifebench", "lifebench-label": "lifebench", "lifebench-refactor": "lifebench",
        "longwrite-ruler": "longbench-write", "ruler-tlg": "ruler", "counting": "larft-words", "retention": "tokens"}
    assert runner.BACKENDS == ("hf", "vllm", "ct2")
    for name in ("EvalSettings", "Evaluator", "run_eval", "parse_filters", "select", "run_lm_eval"):
        assert hasattr(runner, name)
    with pytest.raises(UserError, match="unknown benchmark 'nope'"):
        plan(["nope"], None, EvalSettings())
    with pytest.raises(UserError, match="unknown --format 'csv'"):
        plan([], [("x.jsonl", "csv")], EvalSettings())
    ruler = plan(["ruler-tlg", "counting"], None, EvalSettings(limit=5))
    assert [(name, len(items or [])) for name, _, items in ruler] == [("ruler-tlg", 5), ("counting", 0)]


@pytest.mark.parametrize("field, value, message", [
    ("backend", "llamacpp", "--backend: unknown value 'llamacpp'"), ("device", "tpu", "--device: unknown value 'tpu'"),
    ("dtype", "int3", "--dtype: unknown value 'int3'"), ("reasoning_delimiters", "<a>", "reasoning delimiters"),
])
def test_eval_settings_are_checked_once_when_built(field, value, message):
    from larft.eval.runner import EvalSettings

    with pytest.raises(UserError, match=message):
        EvalSettings(**{field: value})
