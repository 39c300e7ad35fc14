"""larft's log lines: accelerate's logger (main process only) once accelerate's state exists, a plain
logger before it; the CLI shows them as `[larft] message` on stderr."""

import logging

from larft.logs import get_logger, to_console


def test_lines_show_as_larft_lines_on_stderr(capsys):
    to_console()
    to_console()  # once: a second call adds no second handler
    get_logger("larft.example").info("resuming from checkpoint-3 (step 3)")
    captured = capsys.readouterr()
    assert captured.err == "[larft] resuming from checkpoint-3 (step 3)\n" and captured.out == ""


def test_under_accelerate_only_the_main_process_speaks(capsys, monkeypatch):
    from accelerate.state import PartialState

    to_console()
    PartialState(cpu=True)  # what a training run sets up
    log = get_logger("larft.example")
    log.info("one process")
    assert capsys.readouterr().err == "[larft] one process\n"  # no [RANK 0] in a run of one process
    monkeypatch.setitem(PartialState._shared_state, "num_processes", 2)
    log.info("main")
    monkeypatch.setattr(PartialState, "is_main_process", property(lambda self: False))  # now another rank
    log.info("other rank, main only")
    log.warning("other rank, every rank", main_process_only=False)
    assert capsys.readouterr().err.splitlines() == ["[larft] [RANK 0] main", "[larft] [RANK 0] other rank, every rank"]
    logging.getLogger("larft").setLevel(logging.WARNING)
    log.info("hidden")
    assert capsys.readouterr().err == ""
    logging.getLogger("larft").setLevel(logging.INFO)
