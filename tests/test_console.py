"""Console output a person can read: the training bar's postfix carries the step's numbers;
TRL's raw log dicts are not printed (they go to metrics.jsonl / TensorBoard)."""

import re

from transformers.trainer_callback import PrinterCallback, ProgressCallback

from helpers import prompt_rows, tiny_trainer
from larft.callbacks import LARFTPrinterCallback, LARFTProgressCallback, progress_fields


def _train(model_dir, tmp_path, **overrides):
    settings = dict(max_steps=2, max_completion_length=8, awareness_warmup_ratio=0.0, awareness_lambda_max=0.5, seed=0)
    trainer = tiny_trainer(model_dir, tmp_path / "out", rows=prompt_rows(8), **{**settings, **overrides})
    trainer.train()
    return trainer


def _step_logs(trainer):
    return [r for r in trainer.state.log_history if "reward" in r]


def test_progress_fields_are_short_and_skip_what_the_run_lacks():
    logs = {"reward": 0.41234, "length_error_mean": 0.2, "awareness_loss": float("nan"), "awareness_lambda": 0.005,
            "step_time": 4.1234, "kl": 0.1}
    assert progress_fields(3, logs) == {"step": "3", "reward": "0.412", "len_err": "0.2", "lambda": "0.005",
                                        "s/step": "4.12"}


def test_the_bar_postfix_shows_step_reward_length_error_awareness_lambda_and_no_raw_dict(tiny_model_dir, tmp_path,
                                                                                          capsys):
    trainer = _train(tiny_model_dir, tmp_path)
    kinds = [type(c) for c in trainer.callback_handler.callbacks]
    assert LARFTProgressCallback in kinds and ProgressCallback not in kinds and PrinterCallback not in kinds
    out, err = capsys.readouterr()
    last = _step_logs(trainer)[-1]
    postfixes = re.findall(r"step=2, reward=[^\]\r\n]*", err)
    assert postfixes, err[-2000:]
    expected = ", ".join(f"{k}={v}" for k, v in progress_fields(2, last).items())
    assert postfixes[-1].startswith(expected)
    for key in ("len_err=", "aware=", "lambda=", "s/step="):
        assert key in postfixes[-1], postfixes[-1]
    assert "'reward'" not in out + err and "{'loss'" not in out + err  # transformers' dict lines
    assert "[larft] train_runtime=" in out  # the end-of-training summary, as one readable line (tqdm.write)


def test_without_a_bar_one_readable_line_per_step(tiny_model_dir, tmp_path, capsys):
    trainer = _train(tiny_model_dir, tmp_path, disable_tqdm=True)
    assert LARFTPrinterCallback in [type(c) for c in trainer.callback_handler.callbacks]
    out, _ = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.startswith("[larft] step ")]
    assert [line.split(":")[0] for line in lines] == ["[larft] step 1/2", "[larft] step 2/2"]
    first = _step_logs(trainer)[0]
    assert f"reward {first['reward']:.3g}" in lines[0] and f"len_err {first['length_error_mean']:.3g}" in lines[0]
    assert "{" not in out


def test_length_check_table_states_the_change_in_error():
    from larft.callbacks import format_length_check

    row = lambda delivered, dev: {"constraint": "equal", "unit": "words", "target": 20, "delivered": delivered,  # noqa: E731
                                  "deviation": dev}
    text = format_length_check({"before": [row(30, 0.5), row(10, 0.5)], "after": [row(25, 0.25), row(15, 0.25)]})
    assert "before 0.50, after 0.25 (-50%)" in text and "2 held-out prompts" in text
