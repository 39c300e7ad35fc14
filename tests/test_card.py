"""The LARFT model card and --push_to_hub, offline: the Hub is a local stand-in that records
what would have been uploaded (HF_HUB_OFFLINE=1: a real call would fail)."""

import json
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import ModelCard, RepoUrl

from larft.cli import parse_train_args
from larft.models import DEFAULT_MODEL_HUB_ID, hub_id
from larft.train import train


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def hub(monkeypatch):
    """Stand-ins for HfApi.create_repo / upload_folder: record each call and what the folder held."""
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs))
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, path_in_repo=None, **kwargs):
        folder = Path(folder_path)
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        readme = (folder / "README.md").read_text() if (folder / "README.md").is_file() else None
        calls.append(("upload_folder", repo_id, {"folder": folder, "path_in_repo": path_in_repo, "files": files,
                                                 "readme": readme, **kwargs}))

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return calls


def _train(model_dir, out, *extra):
    train_args, config = parse_train_args([
        "--model", str(model_dir), "--output_dir", str(out), "--max_steps", "1", "--num_generations", "2",
        "--per_device_train_batch_size", "4", "--max_completion_length", "8", "--train_size", "12",
        "--train_targets", "4,8", "--awareness_lambda_max", "0.5", "--report_to", "none", "--save_strategy", "no",
        *extra,
    ])
    train(train_args, config)


def test_the_card_is_larfts_with_base_model_config_and_before_after_lengths(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    _train(tiny_model_dir, out, "--length_check_prompts", "2")
    card = ModelCard.load(out / "README.md")
    text = card.text
    assert set(card.data.tags) >= {"larft", "trl", "grpo", "length-control"}
    assert card.data.base_model is None  # a local folder has no Hub id: named in the text instead
    assert f"`{tiny_model_dir}`" in text
    assert "https://arxiv.org/abs/2603.19255" in text and "@article{zhang2026larft" in text
    assert "Closing the Cognition-Action Gap" in text
    assert "fine-tuned version of [None]" not in text and "DeepSeekMath" not in text  # TRL's generic card
    assert "| `awareness_lambda_max` | `0.5` |" in text and "| `num_generations` | `2` |" in text
    assert "Steps trained: 1 (of 1)" in text and "`length_reward` (weight 1)" in text
    check = json.loads((out / "length_check.json").read_text())
    assert len(check["before"]) == len(check["after"]) == 2
    for b, a in zip(check["before"], check["after"]):
        assert f"| {b['constraint']} | {b['unit']} | {b['target']} | {b['delivered']} | {a['delivered']} |" in text
    assert "Mean relative length error" in text and ", after **" in text


def test_base_model_names_map_to_hub_ids(tmp_path):
    assert hub_id("default") == DEFAULT_MODEL_HUB_ID
    assert hub_id("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"
    assert hub_id(str(tmp_path)) is None and hub_id(None) is None


def test_push_to_hub_uploads_the_model_with_the_larft_card(tiny_model_dir, tmp_path, hub):
    out = tmp_path / "run"
    _train(tiny_model_dir, out, "--push_to_hub", "true", "--hub_model_id", "me/larft-tiny")
    assert [c[:2] for c in hub] == [("create_repo", "me/larft-tiny"), ("upload_folder", "me/larft-tiny")]
    upload = hub[1][2]
    assert upload["folder"] == out and upload["path_in_repo"] is None
    assert "model.safetensors" in upload["files"] and "README.md" in upload["files"]
    assert "length-control" in upload["readme"] and "me/larft-tiny" in upload["readme"]  # quick start names the repo


def test_push_to_hub_with_lora_also_uploads_the_merged_model_to_merged(tiny_model_dir, tmp_path, hub):
    pytest.importorskip("peft")
    out = tmp_path / "run"
    _train(tiny_model_dir, out, "--push_to_hub", "true", "--hub_model_id", "me/larft-lora", "--lora_r", "4")
    uploads = [c for c in hub if c[0] == "upload_folder"]
    assert [(c[1], c[2]["path_in_repo"]) for c in uploads] == [("me/larft-lora", None), ("me/larft-lora", "merged")]
    adapter, merged = uploads[0][2], uploads[1][2]
    assert "adapter_model.safetensors" in adapter["files"]
    assert 'subfolder="merged"' in adapter["readme"] and "library_name: peft" in adapter["readme"]
    assert merged["folder"] == out / "merged" and "model.safetensors" in merged["files"]


def test_a_baseline_run_gets_its_own_card_and_pushes_like_a_larft_run(tiny_model_dir, tmp_path, hub):
    from larft.baselines import train_baseline

    out = tmp_path / "rft"
    train_baseline(*parse_train_args([
        "--model", str(tiny_model_dir), "--output_dir", str(out), "--method", "rft", "--max_steps", "2",
        "--per_device_train_batch_size", "4", "--num_generations", "4", "--max_completion_length", "8",
        "--train_size", "8", "--train_targets", "4,8", "--baseline_rounds", "1", "--report_to", "none",
        "--length_check_prompts", "2", "--push_to_hub", "true", "--hub_model_id", "me/rft-tiny",
    ]))
    assert [c[:2] for c in hub] == [("create_repo", "me/rft-tiny"), ("upload_folder", "me/rft-tiny")]
    upload = hub[1][2]
    assert upload["folder"] == out and upload["path_in_repo"] is None
    assert {"model.safetensors", "README.md", "larft_run.json", "metrics.jsonl"} <= set(upload["files"])
    card = ModelCard.load(out / "README.md")
    assert set(card.data.tags) >= {"larft", "trl", "sft", "length-control", "larft-rft"}
    assert "grpo" not in card.data.tags
    text = card.text
    assert "**rejection-sampling SFT** baseline (`larft train --method rft`" in text and "not LARFT" in text
    assert "me/rft-tiny" in upload["readme"]  # quick start names the repo
    assert "GRPOTrainer" not in text and "awareness" not in text  # none of the LARFT card's claims
    assert "Rounds trained: 1" in text and "| `rft_threshold` | `0.8` |" in text and "| `num_generations` | `4` |" in text
    check = json.loads((out / "length_check.json").read_text())
    assert len(check["before"]) == len(check["after"]) == 2
    for b, a in zip(check["before"], check["after"]):
        assert f"| {b['constraint']} | {b['unit']} | {b['target']} | {b['delivered']} | {a['delivered']} |" in text
