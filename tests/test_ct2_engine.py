"""The CTranslate2 rollout engine is the policy: same greedy tokens, same log-probs, follows every
optimizer step, samples with transformers' semantics, and refuses what it cannot do."""

import builtins
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from helpers import prompt_rows, tiny_trainer
from larft.config import LARFTConfig
from larft.ct2_engine import CT2Engine, choose_backend

PROMPTS = ["In about 16 words, describe the history of tea.", "Write about volcanoes.",
           "discuss friendship and the moon landing", "Count the words in the text below."]


def _setup(model_dir):
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = [list(tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                        tokenize=True, return_dict=True)["input_ids"]) for p in PROMPTS]
    return tok, model, ids


def _hf_greedy(model, tok, ids, n):
    out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=[tok.eos_token_id],
                         pad_token_id=tok.pad_token_id)[0, len(ids):].tolist()
    return out[: out.index(tok.eos_token_id) + 1] if tok.eos_token_id in out else out


def _policy_logprobs(model, prompt, completion):
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1 : -1]
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(completion)[:, None])[:, 0]


def test_greedy_tokens_and_logprobs_match_the_policy(tiny_model_dir):
    tok, model, ids = _setup(tiny_model_dir)
    engine = CT2Engine(tok, threads=1)
    engine.sync(model)
    got = engine.generate(ids, max_new_tokens=24, stop_ids=[tok.eos_token_id], do_sample=False)
    for prompt, rollout in zip(ids, got):
        assert rollout.completion_ids == _hf_greedy(model, tok, prompt, 24)
        assert rollout.truncated == (tok.eos_token_id not in rollout.completion_ids)
        assert torch.allclose(torch.tensor(rollout.logprobs), _policy_logprobs(model, prompt, rollout.completion_ids),
                              atol=1e-4)


def test_sampled_logprobs_match_the_policy_and_sync_leaves_it_intact(tiny_model_dir):
    tok, model, ids = _setup(tiny_model_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    engine = CT2Engine(tok, threads=1)
    engine.sync(model)
    # the converter deletes submodules of what it converts: the policy must keep all of its own
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert len(list(model.model.layers[0].children())) >= 2 and hasattr(model.model.layers[0], "self_attn")
    got = engine.generate(ids, max_new_tokens=16, stop_ids=[tok.eos_token_id], temperature=0.7, top_p=0.8, seed=3)
    for prompt, rollout in zip(ids, got):
        assert torch.allclose(torch.tensor(rollout.logprobs), _policy_logprobs(model, prompt, rollout.completion_ids),
                              atol=1e-4)


def test_the_engine_follows_an_optimizer_step(tiny_model_dir):
    tok, model, ids = _setup(tiny_model_dir)
    engine = CT2Engine(tok, threads=1)
    engine.sync(model)
    stale = engine.generate(ids, max_new_tokens=12, stop_ids=[tok.eos_token_id], do_sample=False)
    opt = torch.optim.SGD(model.parameters(), lr=5.0)
    model.train()
    batch = torch.tensor([ids[0] + [7, 8, 9, 10] * 4])
    model(batch, labels=batch).loss.backward()
    opt.step()
    model.eval()
    engine.sync(model)
    fresh = engine.generate(ids, max_new_tokens=12, stop_ids=[tok.eos_token_id], do_sample=False)
    assert [r.completion_ids for r in fresh] == [_hf_greedy(model, tok, p, 12) for p in ids]
    assert [r.logprobs for r in fresh] != [r.logprobs for r in stale]  # it is not the old weights by chance
    assert len(engine.sync_seconds) == 2


def test_sampling_follows_transformers_temperature_and_top_p(tiny_model_dir):
    """First-token frequencies over many samples against HF's processed distribution
    (temperature, then top-p); CTranslate2's own default would be greedy (sampling_topk=1)."""
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    tok, model, ids = _setup(tiny_model_dir)
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)  # a peaked distribution: a few hundred samples then measure it well
    engine = CT2Engine(tok, threads=1)
    engine.sync(model)
    n = 600
    got = engine.generate([ids[0]] * n, max_new_tokens=1, stop_ids=[tok.eos_token_id], temperature=0.7, top_p=0.8,
                          seed=0)
    counts = torch.bincount(torch.tensor([r.completion_ids[0] for r in got]), minlength=len(tok)).float() / n
    with torch.no_grad():
        logits = model(torch.tensor([ids[0]])).logits[:, -1]
    scores = TopPLogitsWarper(0.8)(None, TemperatureLogitsWarper(0.7)(None, logits))
    want = torch.softmax(scores, -1)[0]
    assert (want > 0).sum() > 1, "the check needs more than one candidate token"
    assert counts[want == 0].sum() == 0  # nothing outside HF's nucleus
    assert 0.5 * (counts - want).abs().sum() < 0.08  # total variation distance


def test_a_trainer_step_rolls_out_with_ct2_on_the_current_weights(tiny_model_dir, tmp_path):
    trainer = tiny_trainer(tiny_model_dir, tmp_path / "out", max_steps=2, max_completion_length=10, learning_rate=1e-2,
                           awareness_lambda_max=0.5, awareness_warmup_ratio=0.0, rollout_backend="ct2")
    assert trainer.rollout_func is not None and trainer.rollout_backend == "ct2"
    trainer.train()
    assert len(trainer.rollout_func.engine.sync_seconds) == 2  # the weights of each step, converted once
    # the engine's copy of the weights is freed after the rollouts, not kept through the backward
    assert trainer.rollout_func.engine.generator is None and trainer.rollout_func.synced_step is None
    logged = [r for r in trainer.state.log_history if "reward" in r]
    assert len(logged) == 2 and all(0.0 <= r["reward"] <= 1.0 for r in logged)
    trace = [json.loads(x) for x in (tmp_path / "out" / "rollouts.jsonl").read_text().splitlines()]
    assert len(trace) == 8  # one completion per (repeated) prompt, as TRL expects


def test_missing_ctranslate2_is_a_clear_error_before_any_model_loads(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_ct2(name, *args, **kwargs):
        if name == "ctranslate2" or name.startswith("ctranslate2."):
            raise ImportError("No module named 'ctranslate2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ct2)
    args = LARFTConfig(output_dir=str(tmp_path), rollout_backend="ct2", report_to="none")
    with pytest.raises(ValueError, match=r"larft\[ct2\]"):
        choose_backend(args, "/no/such/model/is/loaded")
    auto = LARFTConfig(output_dir=str(tmp_path), rollout_backend="auto", report_to="none")
    assert choose_backend(auto, "/no/such/model/is/loaded") == "hf"


def test_an_architecture_ct2_cannot_convert_is_named(tmp_path):
    from transformers import PretrainedConfig

    class MysteryConfig(PretrainedConfig):
        model_type = "mystery"

    model = type("Model", (), {"config": MysteryConfig(architectures=["MysteryForCausalLM"])})()
    args = LARFTConfig(output_dir=str(tmp_path), rollout_backend="ct2", report_to="none")
    with pytest.raises(ValueError, match=r"MysteryForCausalLM.*rollout_backend: hf"):
        choose_backend(args, model)


def test_sampling_options_ct2_cannot_reproduce_are_refused(tmp_path, tiny_model_dir):
    args = LARFTConfig(output_dir=str(tmp_path), rollout_backend="ct2", report_to="none", repetition_penalty=1.2)
    with pytest.raises(ValueError, match="repetition_penalty"):
        choose_backend(args, str(tiny_model_dir))


def test_unknown_backend_is_refused(tmp_path):
    with pytest.raises(ValueError, match="rollout_backend"):
        LARFTConfig(output_dir=str(tmp_path), rollout_backend="llamacpp", report_to="none")


def test_each_row_stops_at_its_own_budget_in_one_batch(tiny_model_dir):
    tok, model, ids = _setup(tiny_model_dir)
    engine = CT2Engine(tok, threads=1)
    engine.sync(model)
    never = tok.convert_tokens_to_ids("<|endoftext|>")  # a stop token greedy decoding of this model never picks
    budgets = [3, 7, 12, 24]
    got = engine.generate(ids, max_new_tokens=budgets, stop_ids=[never], do_sample=False)
    alone = [engine.generate([p], max_new_tokens=b, stop_ids=[never], do_sample=False)[0] for p, b in zip(ids, budgets)]
    for rollout, single, budget in zip(got, alone, budgets):
        assert rollout.completion_ids == single.completion_ids  # the same as decoded alone with that budget
        assert len(rollout.completion_ids) == budget and rollout.truncated


def test_per_target_budgets_give_each_rollout_twice_its_target(tiny_model_dir, tmp_path):
    from larft.budget import training_budget

    rows = prompt_rows()
    trainer = tiny_trainer(tiny_model_dir, tmp_path / "out", rows=rows, max_steps=1, max_completion_length=400,
                           rollout_backend="ct2", per_target_budget=True, awareness_lambda_max=0.0)
    tok = trainer.processing_class
    budgets = trainer.rollout_func.budgets(rows, trainer)
    assert budgets == [min(400, training_budget(r["target"], tok)) for r in rows]
    assert len(set(budgets)) > 1  # targets 4 and 8: their own budgets
    assert trainer.rollout_func.budgets([{"prompt": rows[0]["prompt"]}], trainer) == [400]  # no target: the cap


def test_two_rows_with_the_same_prompt_get_their_own_budgets(tiny_model_dir, tmp_path):
    """The budgets follow each rollout's row through generation, not its prompt's text."""
    from larft.budget import training_budget

    prompt = [{"role": "user", "content": "Describe the moon."}]
    rows = [{"prompt": prompt, "target": 4, "constraint": "equal"}, {"prompt": prompt, "target": 40, "constraint": "equal"}]
    trainer = tiny_trainer(tiny_model_dir, tmp_path / "out", rows=rows, max_steps=1, max_completion_length=400,
                           rollout_backend="ct2", per_target_budget=True, awareness_lambda_max=0.0)
    asked = []
    rollout = trainer.rollout_func

    def spying(prompts, trainer):
        asked.append(rollout.budgets(rollout._rows(prompts, trainer), trainer))
        return rollout(prompts, trainer)

    trainer.rollout_func = spying
    trainer.model.train()
    trainer._generate_and_score_completions([rows[0], rows[0], rows[1], rows[1]])
    tok = trainer.processing_class
    assert asked == [[training_budget(4, tok)] * 2 + [training_budget(40, tok)] * 2]
    assert training_budget(4, tok) < training_budget(40, tok)


def test_a_folded_temperature_reports_the_tempered_log_probs(tiny_model_dir):
    """With the output layer divided by T and sampling at temperature 1, the engine samples the
    tempered distribution and reports its log-probs: those of log_softmax(logits / T)."""
    tok, model, ids = _setup(tiny_model_dir)
    engine = CT2Engine(tok, threads=1, logits_scale=1 / 0.7)
    engine.sync(model)
    got = engine.generate(ids, max_new_tokens=16, stop_ids=[tok.eos_token_id], temperature=1.0, seed=3)
    for prompt, rollout in zip(ids, got):
        with torch.no_grad():
            logits = model(torch.tensor([prompt + rollout.completion_ids])).logits[0, len(prompt) - 1 : -1]
        tempered = torch.log_softmax(logits / 0.7, -1).gather(1, torch.tensor(rollout.completion_ids)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(rollout.logprobs), tempered, atol=1e-4)
    greedy = engine.generate(ids, max_new_tokens=12, stop_ids=[tok.eos_token_id], do_sample=False)
    assert [r.completion_ids for r in greedy] == [_hf_greedy(model, tok, p, 12) for p in ids]  # embeddings intact


@pytest.mark.parametrize("use_dora", [False, True])
def test_a_lora_policy_rolls_out_its_merged_weights(tiny_model_dir, use_dora):
    """ct2 rolls out a LoRA policy as it is (adapter merged into copies of the base weights by
    PEFT's own merge): greedy tokens and log-probs of the PEFT model; the policy itself untouched."""
    from peft import LoraConfig, get_peft_model

    tok, base, ids = _setup(tiny_model_dir)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", use_dora=use_dora))
    with torch.no_grad():  # a trained adapter (LoRA's B starts at zero, which would merge to the base model)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(len(name)))
    model.eval()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    engine = CT2Engine(tok, threads=1)
    engine.sync(model)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert not any(getattr(m, "merged", False) for m in model.modules())
    got = engine.generate(ids, max_new_tokens=16, stop_ids=[tok.eos_token_id], do_sample=False)
    with model.disable_adapter():
        plain = [_hf_greedy(model, tok, p, 16) for p in ids]
    for prompt, rollout in zip(ids, got):
        assert rollout.completion_ids == _hf_greedy(model, tok, prompt, 16)
        assert torch.allclose(torch.tensor(rollout.logprobs), _policy_logprobs(model, prompt, rollout.completion_ids),
                              atol=1e-4)
    assert [r.completion_ids for r in got] != plain  # the adapter changes the answers: they are not the base's


def test_a_lora_trainer_rolls_out_with_ct2(tiny_model_dir, tmp_path):
    from peft import LoraConfig

    trainer = tiny_trainer(tiny_model_dir, tmp_path / "out", max_steps=2, max_completion_length=10, learning_rate=5e-2,
                           awareness_lambda_max=0.5, awareness_warmup_ratio=0.0, rollout_backend="ct2",
                           peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    assert trainer.rollout_backend == "ct2" and hasattr(trainer.model, "peft_config")
    trainer.train()
    assert len(trainer.rollout_func.engine.sync_seconds) == 2
    logged = [r for r in trainer.state.log_history if "reward" in r]
    assert len(logged) == 2 and all(0.0 <= r["reward"] <= 1.0 for r in logged)


def test_adapters_other_than_lora_are_refused_by_name(tiny_model_dir):
    from peft import IA3Config, get_peft_model

    tok, base, _ = _setup(tiny_model_dir)
    model = get_peft_model(base, IA3Config(target_modules=["down_proj"], feedforward_modules=["down_proj"]))
    with pytest.raises(ValueError, match="LoRA adapters only.*IA3.*rollout_backend: hf"):
        CT2Engine(tok, threads=1).sync(model)
