"""larft.memory_estimate: parameter counts against real models, the per-layer activation formula
against what torch saves, and the estimate's arithmetic (no model weights are loaded)."""

import json
from pathlib import Path

import pytest
import torch

from larft.memory_estimate import (
    GB,
    Shape,
    estimate_for,
    estimate_memory,
    layer_bytes_per_token,
    lora_parameter_count,
    max_micro_batch,
    parameter_count,
    strategy_from_accelerate_config,
)

ROOT = Path(__file__).resolve().parents[1]
QWEN7B = Path(__file__).parent / "data" / "qwen2.5-7b-config.json"
#: Qwen2.5-7B-Instruct's published parameter count (its config: tests/data/qwen2.5-7b-config.json)
QWEN7B_PARAMS = 7_615_616_512
GPU80 = int(80e9)


def qwen7b_config():
    from transformers import Qwen2Config

    return Qwen2Config.from_json_file(str(QWEN7B))


def _tiny_configs():
    from transformers import LlamaConfig, Qwen2Config, Qwen3Config

    small = dict(vocab_size=300, hidden_size=32, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2)
    return {
        "qwen2-tied": Qwen2Config(**small, tie_word_embeddings=True),
        "qwen2-untied": Qwen2Config(**small, tie_word_embeddings=False),
        "llama-bias": LlamaConfig(**small, attention_bias=True, mlp_bias=True),
        "qwen3": Qwen3Config(**small, head_dim=16),
    }


def test_parameter_count_matches_the_tiny_llama_of_the_tests():
    from tiny import tiny_model, tiny_tokenizer

    model = tiny_model(tiny_tokenizer())
    assert parameter_count(model.config) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list(_tiny_configs()))
def test_parameter_count_matches_a_model_built_from_the_config(name):
    from transformers import AutoModelForCausalLM

    config = _tiny_configs()[name]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    assert parameter_count(config) == sum(p.numel() for p in model.parameters())


def test_parameter_count_of_qwen2_5_7b_from_its_config_file():
    assert parameter_count(qwen7b_config()) == QWEN7B_PARAMS
    assert parameter_count(json.loads(QWEN7B.read_text())) == QWEN7B_PARAMS  # a plain mapping works too
    assert 30e6 < lora_parameter_count(qwen7b_config(), 16) < 50e6  # r=16 on every linear map: ~40M


def _saved_bytes(model, rows, seq, autocast):
    """Bytes of the distinct tensors torch saves for the backward of the model's trunk (weights excluded)."""
    ids = torch.randint(0, model.config.vocab_size, (rows, seq))
    mask = torch.ones(rows, seq, dtype=torch.long)
    mask[0, :3] = 0  # padded, as GRPO's batches are
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            model.model(input_ids=ids, attention_mask=mask)
    return sum(seen.values())


@pytest.mark.parametrize("precision", ["fp32", "autocast", "bf16"])
def test_the_layer_formula_is_what_torch_saves(precision):
    """One more decoder layer adds `layer_bytes_per_token` x tokens (+ its autocast weight copies)."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    rows, seq = 2, 40
    saved = []
    for layers in (1, 2):
        config = Qwen2Config(vocab_size=300, hidden_size=64, intermediate_size=160, num_hidden_layers=layers,
                             num_attention_heads=4, num_key_value_heads=2)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
        if precision == "bf16":
            model.to(torch.bfloat16)
        model.train()
        saved.append(_saved_bytes(model, rows, seq, autocast=precision == "autocast"))
    shape = Shape.of(config)
    a, r = (4, 4) if precision == "fp32" else (2, 4) if precision == "autocast" else (2, 2)
    expected = rows * seq * layer_bytes_per_token(shape, compute=a, residual=r, autocast=precision == "autocast",
                                                  masked=True, seq=seq)
    if precision == "autocast":
        expected += 2 * shape.layer_linear_params
    assert saved[1] - saved[0] == pytest.approx(expected, rel=0.02)


def _qwen7b_zero3(**kw):
    settings = dict(strategy="zero3", num_processes=8, dtype_bytes=4, mixed_precision=True,
                    per_device_train_batch_size=2, max_prompt_length=512, max_completion_length=7488,
                    activation_checkpointing=True, beta=0.001, awareness=True, use_vllm=True,
                    vllm_mode="colocate", vllm_gpu_memory_utilization=0.3, steps_per_generation=8,
                    gradient_accumulation_steps=8, device_type="cuda", device_memory=GPU80)
    return estimate_memory(qwen7b_config(), **{**settings, **kw})


def test_qwen2_5_7b_fits_8x80gb_under_zero3_with_micro_batches_of_2_and_checkpointing():
    est = _qwen7b_zero3()
    assert est.fits, est.format()
    assert 40 * GB < est.total < 80 * GB  # not trivially small either: vLLM's 24 GB, ZeRO-3's 1/8 of ~150 GB, ...


def test_qwen2_5_7b_full_fine_tuning_with_adam_does_not_fit_under_ddp():
    est = _qwen7b_zero3(strategy="ddp")
    assert not est.fits
    # the model states alone: fp32 weights, gradients, DDP's buckets and AdamW's two states, 4 + 4 + 4 + 8 bytes
    states = sum(p.bytes for p in est.parts if p.name in ("weights", "gradients", "optimizer state",
                                                          "DDP gradient buckets"))
    assert states == pytest.approx(20 * QWEN7B_PARAMS, rel=1e-6)
    assert states > GPU80


@pytest.mark.parametrize("kw", [
    dict(),
    dict(strategy="ddp", use_vllm=False, activation_checkpointing=False),
    dict(strategy="fsdp", beta=0.0),
    dict(strategy="zero2", use_vllm=False, attn_implementation="flash_attention_2"),
    dict(strategy="single", num_processes=1, device_type="cpu", device_memory=None, use_vllm=False),
])
def test_the_parts_sum_to_the_total(kw):
    est = _qwen7b_zero3(**kw)
    assert sum(p.bytes for p in est.parts) == est.total
    assert est.biggest in est.parts and est.biggest.bytes == max(p.bytes for p in est.parts)
    assert est.phases[est.phase] == est.total == max(est.phases.values())
    assert all(p.bytes > 0 for p in est.parts + est.other_parts)
    table = est.format()
    assert "total" in table and f"{est.total / GB:.2f}" in table


@pytest.mark.parametrize("checkpointing", [False, True])
def test_doubling_the_micro_batch_doubles_activations_and_logits(checkpointing):
    """Materialized logits (older TRL) grow with the batch; TRL 1.16's fused head has a part that does not
    (the LM head's fp32 gradient), so it grows by less than 2x."""
    def parts(rows, fused):
        est = estimate_memory(qwen7b_config(), strategy="zero3", num_processes=8, per_device_train_batch_size=rows,
                              max_prompt_length=256, max_completion_length=2048, awareness=False,
                              activation_checkpointing=checkpointing, fused_lm_head=fused, device_type="cuda")
        return {p.name: p.bytes for p in est.parts + est.other_parts}

    one, two = parts(2, fused=False), parts(4, fused=False)
    assert two["activations"] / one["activations"] == pytest.approx(2.0, rel=0.05)
    assert two["logits / log-probs"] / one["logits / log-probs"] == pytest.approx(2.0, rel=0.05)
    fused_one, fused_two = parts(2, fused=True), parts(4, fused=True)
    assert 1.0 < fused_two["logits / log-probs"] / fused_one["logits / log-probs"] < 2.0


def test_single_process_runs_the_awareness_backward_first_and_several_processes_do_not():
    one = _qwen7b_zero3(strategy="single", num_processes=1, use_vllm=False, device_memory=None)
    many = _qwen7b_zero3(strategy="ddp", use_vllm=False, device_memory=None)
    assert "awareness" in one.phases and "awareness" not in many.phases
    assert any(p.name == "awareness activations" and p.phase == "train" for p in many.parts + many.other_parts)


def test_sharding_divides_the_model_states():
    ddp, zero2, zero3 = (_qwen7b_zero3(strategy=s, beta=0.0) for s in ("ddp", "zero2", "zero3"))
    get = lambda est, name: next(p.bytes for p in est.parts + est.other_parts if p.name == name)  # noqa: E731
    assert get(zero2, "weights") == 2 * QWEN7B_PARAMS  # DeepSpeed bf16: the whole model in bf16
    assert get(zero3, "weights") == 2 * QWEN7B_PARAMS // 8
    assert get(zero2, "optimizer state") == get(zero3, "optimizer state") == 8 * QWEN7B_PARAMS // 8
    assert get(ddp, "optimizer state") == 8 * QWEN7B_PARAMS


def test_accelerate_configs_give_their_strategy():
    folder = ROOT / "configs" / "accelerate"
    assert strategy_from_accelerate_config(folder / "ddp.yaml") == ("ddp", 2)
    assert strategy_from_accelerate_config(folder / "deepspeed-zero2.yaml") == ("zero2", 8)
    assert strategy_from_accelerate_config(folder / "deepspeed-zero3.yaml") == ("zero3", 8)
    assert strategy_from_accelerate_config(folder / "fsdp.yaml") == ("fsdp", 8)


def test_estimate_for_reads_a_yaml_config_and_a_larft_config(tmp_path):
    import yaml

    from larft.config import LARFTConfig

    data = yaml.safe_load((ROOT / "configs" / "qwen2.5-7b-8gpu.yaml").read_text())
    est = estimate_for(data, qwen7b_config(), num_processes=8, strategy="zero3", device_memory=GPU80)
    s = est.settings
    assert (s["per_device_train_batch_size"], s["seq_len"], s["activation_checkpointing"], s["use_vllm"]) == \
        (2, 2048 + 8000, True, True)
    assert any(p.name == "vLLM (colocate)" and p.bytes == int(0.3 * GPU80) for p in est.parts)
    assert any(p.name == "reference model" for p in est.parts)  # beta 0.001
    config = LARFTConfig(str(tmp_path), per_device_train_batch_size=4, num_generations=4, max_completion_length=64,
                         beta=0.0, report_to="none")
    small = estimate_for(config, qwen7b_config(), device_type="cpu")
    assert small.settings["per_device_train_batch_size"] == 4 and small.settings["max_completion_length"] == 64
    assert not any(p.name == "reference model" for p in small.parts + small.other_parts)


def test_max_micro_batch_is_the_largest_that_fits():
    kw = dict(strategy="zero3", num_processes=8, max_prompt_length=256, max_completion_length=8000,
              activation_checkpointing=True, awareness=True, use_vllm=True, device_type="cuda")
    best = max_micro_batch(qwen7b_config(), GPU80, **kw)
    assert best >= 2
    assert estimate_memory(qwen7b_config(), per_device_train_batch_size=best, device_memory=GPU80, **kw).fits
    assert not estimate_memory(qwen7b_config(), per_device_train_batch_size=best + 1, device_memory=GPU80, **kw).fits


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="strategy"):
        estimate_memory(qwen7b_config(), strategy="zero4")
