"""research/counting_warmup.py: supervised counting alone, read before/while/after training."""

import json
import random
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from larft.length import count_words
from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]


def _module():
    return load_script("research/counting_warmup.py")


def test_cuts_keep_formatting_and_stay_in_range():
    cw = _module()
    text = "One two,\n\n- three **four** five.\nSix"
    assert cw.cut_at_word(text, 3) == "One two,\n\n-"
    assert cw.cut_at_word(text, 2) == "One two,"
    assert cw.cut_at_word(text, 4) == "One two,\n\n- three"
    assert cw.cut_at_word(text, 99) == text
    texts = [" ".join(f"w{i}" for i in range(n)) for n in (3, 12, 300)]
    cuts = cw.random_cuts(texts, 200, random.Random(0), lo=5, hi=160)
    assert all(5 <= count_words(c) <= 160 for c in cuts)  # the 3-word text is never drawn
    assert max(count_words(c) for c in cuts) > 100  # long cuts come from the long text
    with pytest.raises(ValueError, match="5 words"):
        cw.random_cuts(["a b"], 1, random.Random(0))


@pytest.mark.parametrize("replay", [0, 2])
def test_trains_reads_and_probes_a_tiny_model(tiny_model_dir, tmp_path, monkeypatch, capsys, replay):
    cw = _module()
    texts = [" ".join(f"word{j}" for j in range(8 + 7 * i)) for i in range(6)]
    work = tmp_path / "work" / Path(tiny_model_dir).name  # each model's own folder
    work.mkdir(parents=True)
    (work / "texts.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = tmp_path / "counting_warmup.json"
    check = tmp_path / "length_check.json"  # a sweep's held-out answers of the base model
    before = [{"prompt": f"Describe tea in about {n} words.", "constraint": "equal", "unit": "words", "target": n,
               "delivered": 500, "deviation": (500 - n) / n, "text": "x"} for n in (4, 8)]
    check.write_text(json.dumps({"before": before}))
    argv = ["counting_warmup.py", "--model", str(tiny_model_dir), "--prompts", "6", "--held-out", "2",
            "--steps", "3", "--batch-size", "2", "--read-every", "2", "--probe-own", "2", "--probe-limit", "4",
            "--length-check", str(check), "--length-check-tokens", "6", "--work-dir", str(tmp_path / "work"),
            "--out", str(out), "--plot", str(tmp_path / "curve.png"), "--replay", str(replay)]
    monkeypatch.setattr(sys, "argv", argv)
    cw.main()
    got = json.loads(out.read_text())
    assert [r["step"] for r in got["count_read_curve"]] == [0, 2, 3]  # before, every 2 steps, the last
    assert all(r["n"] == 4 for r in got["count_read_curve"])  # 2 held-out texts, cut twice each
    assert got["examples"] == 6 and set(got["counting_probe"]) == {"base", "trained"}
    assert got["replay_examples"] == 3 * replay
    probe = got["counting_probe"]["trained"]
    assert probe["n"] == 4 and 0.0 <= probe["format_rate"] <= 1.0
    assert (tmp_path / "curve.png").stat().st_size > 0
    following = got["length_check"]
    assert following["before"]["words_mean"] == 500  # the file's answers, scored
    assert following["after"]["words_mean"] <= 6 * 4  # the trained model's own answers, within their 6 tokens
    trained = next(work.glob(f"model-3x2-{f'r{replay}-' if replay else ''}lr*"))
    before, after = (AutoModelForCausalLM.from_pretrained(d).state_dict() for d in (tiny_model_dir, trained))
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the counting steps moved the weights
    # a second call finds the trained model and the probes: no training, the same curve
    cw.main()
    assert "not training again" in capsys.readouterr().out
    assert json.loads(out.read_text())["count_read_curve"] == got["count_read_curve"]


def test_replay_batch_labels_the_answer_and_ends_only_finished_turns(tiny_model_dir):
    from larft.awareness import IGNORE_INDEX, turn_end
    from larft.models import load_tokenizer

    cw = _module()
    tokenizer = load_tokenizer(str(tiny_model_dir))
    finished, cut = "Tea is a drink.", " ".join(["tea"] * (cw.TEXT_TOKENS + 10))
    prompts = [[{"role": "user", "content": "Describe tea in 4 words."}], [{"role": "user", "content": "Describe tea."}]]
    batch = cw.build_replay_batch(prompts, [finished, cut], tokenizer)
    end_ids = tokenizer(turn_end(tokenizer), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(finished, add_special_tokens=False)["input_ids"]
    row = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX].tolist()
    assert row == answer_ids + end_ids  # the answer, then the turn's end: the model learns where it stops
    long_row = batch["labels"][1][batch["labels"][1] != IGNORE_INDEX].tolist()
    assert long_row == tokenizer(cut, add_special_tokens=False)["input_ids"]  # cut by the budget: no end taught
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()
    assert batch["attention_mask"][0][0] == 0  # left-padded: labels end every row
