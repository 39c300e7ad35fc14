"""research/count_read.py: a model's teacher-forced count of fixed texts."""

import json
from pathlib import Path

from transformers import AutoTokenizer
from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]


def _module(name: str):
    return load_script(f"research/{name}.py")


def test_count_read_reads_every_text_and_its_true_count(tiny_model_dir, tmp_path):
    from tiny import tiny_model

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tiny_model(tok).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    texts = ["one two three", "a b c d e f g h i j k l", " ".join(["w"] * 40)]
    check = tmp_path / "length_check.json"
    check.write_text(json.dumps({"before": [{"text": t} for t in texts]}))
    count_read = _module("count_read")
    got = count_read.count_read(str(tmp_path / "m"), count_read.texts_from(check), batch_size=2)
    assert got["n"] == 3 and [t for t, _ in got["counts"]] == [3, 12, 40]  # the truth, in order, over batches
    assert 0.0 <= got["error_mean"] <= 1.0 and 0.0 <= got["numbers_rate"] <= 1.0


def test_a_later_read_keeps_the_models_read_earlier_on_the_same_texts(tmp_path):
    count_read = _module("count_read")
    out = tmp_path / "count_read.json"

    def row(model, truth):
        return {"model": model, "counts": [[t, None] for t in truth]}

    out.write_text(json.dumps({"models": [row("a", [3, 12]), row("b", [3, 12])]}))  # before the digest was kept
    merged = count_read.merge_earlier(out, "d1", [row("b", [3, 12]), row("c", [3, 12])])
    assert [r["model"] for r in merged] == ["a", "b", "c"]  # b read again: the new row only
    assert count_read.merge_earlier(out, "d1", [row("c", [5, 12])]) == [row("c", [5, 12])]  # other texts
    out.write_text(json.dumps({"texts_sha256": "d1", "models": [row("a", [3, 12])]}))
    assert [r["model"] for r in count_read.merge_earlier(out, "d1", [row("c", [3, 12])])] == ["a", "c"]
    assert [r["model"] for r in count_read.merge_earlier(out, "d2", [row("c", [3, 12])])] == ["c"]
