import json

import pytest

from larft.data import convert_file, generate_rows, write_rows
from larft.loader import MAX_TARGET, DataError, load_rows, read_rows


def test_generate_is_seeded_and_in_the_official_shape():
    a = generate_rows(30, targets=[16, 32], constraints=["equal", "at_most", "range"], seed=3)
    b = generate_rows(30, targets=[16, 32], constraints=["equal", "at_most", "range"], seed=3)
    assert a == b
    assert a != generate_rows(30, targets=[16, 32], constraints=["equal", "at_most", "range"], seed=4)
    assert len({r["prompt"][0]["content"] for r in a}) == 30  # no repeats
    for r in a:
        assert r["prompt"][0]["role"] == "user"
        assert r["reward_model"]["style"] == "chat" and r["data_source"]
        assert r["constraint"] in ("equal", "at_most", "range") and r["unit"] == "words"
        assert str(r["reward_model"]["ground_truth"]) in r["prompt"][0]["content"] or r["constraint"] == "range"
        if r["constraint"] == "range":
            lo, hi = r["target_range"]
            assert lo < r["reward_model"]["ground_truth"] < hi
            assert f"{lo}" in r["prompt"][0]["content"] and f"{hi}" in r["prompt"][0]["content"]
    with pytest.raises(ValueError, match="distinct"):
        generate_rows(10**6)


def test_official_larft_format_is_accepted(tmp_path):
    path = tmp_path / "official.jsonl"
    record = {
        "prompt": [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Write 500 words."}],
        "reward_model": {"ground_truth": 500, "style": "chat"},
        "data_source": "length_control",
    }
    path.write_text(json.dumps(record) + "\n")
    rows = load_rows(path)
    assert rows == [{"prompt": record["prompt"], "target": 500, "target_range": None, "constraint": "equal", "unit": "words",
                     "line": 1, "data_source": "length_control", "_source": str(path)}]


def test_validate_reports_every_problem_with_file_line_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = [
        json.dumps({"prompt": "ok", "target": 10}),
        "{not json",
        json.dumps({"target": 10}),
        json.dumps({"prompt": "x", "target": 0}),
        json.dumps({"prompt": "x", "target": -4}),
        json.dumps({"prompt": "x", "target": 2.5}),
        json.dumps({"prompt": "x", "target": MAX_TARGET + 1}),
        json.dumps({"prompt": "x", "constraint": "range", "target_range": [20, 10]}),
        json.dumps({"prompt": "x", "target": 5, "unit": "lines"}),
        json.dumps({"prompt": "x", "target": 5, "constraint": "about"}),
        json.dumps({"prompt": "  ", "target": 5}),
        json.dumps({"prompt": "x"}),
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"prompt": "\xff", "target": 3}\n')
    rows, issues = read_rows(path)
    assert len(rows) == 1
    found = {(i.line, i.field) for i in issues}
    assert found == {
        (2, ""), (3, "prompt"), (4, "target"), (5, "target"), (6, "target"), (7, "target"), (8, "target_range"),
        (9, "unit"), (10, "constraint"), (11, "prompt"), (12, "target"), (13, ""),
    }
    assert all(str(i).startswith(f"{path}:{i.line}") for i in issues)
    with pytest.raises(DataError, match="bad.jsonl:4: target: must be positive"):
        load_rows(path)
    assert load_rows(path, skip_invalid=True)[0]["target"] == 10


def test_missing_and_empty_files(tmp_path):
    assert "file not found" in str(read_rows(tmp_path / "nope.jsonl")[1][0])
    (tmp_path / "empty.jsonl").write_text("")
    assert "empty" in str(read_rows(tmp_path / "empty.jsonl")[1][0])


def test_convert_round_trip_jsonl_parquet(tmp_path):
    rows = generate_rows(12, constraints=["equal", "range"], seed=0)
    write_rows(rows, tmp_path / "a.jsonl")
    assert convert_file(tmp_path / "a.jsonl", tmp_path / "a.parquet") == 12
    assert convert_file(tmp_path / "a.parquet", tmp_path / "b.jsonl") == 12
    drop_source = lambda rows: [{k: v for k, v in r.items() if k != "_source"} for r in rows]  # noqa: E731
    assert drop_source(read_rows(tmp_path / "b.jsonl")[0]) == drop_source(read_rows(tmp_path / "a.jsonl")[0])
    assert [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()] == rows  # as they were


def test_parquet_with_a_wrong_schema(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"question": ["hi"], "answer": ["x"]}), tmp_path / "w.parquet")
    _, issues = read_rows(tmp_path / "w.parquet")
    assert len(issues) == 1 and issues[0].field == "columns" and "'prompt' or 'messages'" in issues[0].message


def test_rows_whose_fields_differ_in_type_are_checked_one_by_one(tmp_path):
    """`datasets` cannot put a string prompt and a chat prompt (or an int and a text target) in one
    column: the loader reads such a file line by line and still names each bad field."""
    path = tmp_path / "mixed.jsonl"
    lines = [{"prompt": "Describe tea in 20 words.", "target": 20},
             {"prompt": [{"role": "user", "content": "Describe rain in 30 words."}], "target": 30},
             {"prompt": "Describe snow in ten words.", "target": "ten"}]
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    rows, issues = read_rows(path)
    assert [r["target"] for r in rows] == [20, 30]
    assert [str(i) for i in issues] == [f"{path}:3: target: must be an integer, got 'ten'"]


def test_a_row_without_a_target_is_kept_only_when_asked(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "Name a colour.", "topic": "colours"}) + "\n"
                    + json.dumps({"prompt": "Tea in 9 words.", "target": 9}) + "\n"
                    + json.dumps({"prompt": "Tea.", "target": "nine"}) + "\n")
    _, issues = read_rows(path)
    assert [(i.line, i.field) for i in issues] == [(1, "target"), (3, "target")]
    rows, issues = read_rows(path, require_target=False)
    assert [(i.line, i.field) for i in issues] == [(3, "target")]  # a bad target is still an error
    assert [(r["target"], r.get("topic")) for r in rows] == [(None, "colours"), (9, None)]


def test_length_spec_reads_every_row_form():
    from larft.length_spec import LengthSpec

    assert LengthSpec.of({"target": 10}) == LengthSpec(10, "equal", "words")
    assert LengthSpec.of({"target": None, "constraint": None, "unit": None}).goal is None  # datasets' filled gaps
    assert LengthSpec.of({"reward_model": {"ground_truth": 500}}).goal == 500  # the official LARFT format
    spec = LengthSpec.of({"constraint": "range", "target_range": [10, 20], "unit": "chars"})
    assert spec.goal == (10, 20) and spec.largest == 20 and spec.as_json() == [10, 20] and spec.unit == "chars"
    with pytest.raises(KeyError, match="range row has no 'target_range'"):
        LengthSpec.of({"constraint": "range"}).required_goal()


def test_parquet_keeps_a_column_the_first_row_lacks(tmp_path):
    # pyarrow's from_pylist takes the first row's keys: a "range" row after an "equal" one lost its target_range
    rows = generate_rows(40, constraints=["equal", "range"], seed=3)
    rows.sort(key=lambda r: r["constraint"] != "equal")  # an equal row (no target_range) first
    assert "target_range" not in rows[0] and "target_range" in rows[-1]
    write_rows(rows, tmp_path / "a.parquet")
    assert convert_file(tmp_path / "a.parquet", tmp_path / "b.jsonl") == 40
    assert [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()] == rows
