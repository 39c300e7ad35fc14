"""larft's log lines go through accelerate's logger, as TRL's do: under `accelerate launch` only the main
process speaks (`main_process_only=False` for a line every rank must say). `print` is kept for what a
command outputs (a report, a generated answer, the per-step progress line).

In one process (`larft eval`, `larft data`, a run on one device) a line is logged as it is. `larft` (the CLI) shows INFO lines as `[larft] message` on stderr;
a Python caller configures `logging` as for any library (warnings show by default).
"""

from __future__ import annotations

import logging
import sys

ROOT = "larft"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a line is logged (a test's capture, a redirected stream)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _Logger(logging.LoggerAdapter):
    """`accelerate.logging.get_logger(name)` (its `[RANK n]` lines, main process only by default) when
    accelerate runs more than one process; a plain logger in one process."""

    def log(self, level: int, msg: object, *args, main_process_only: bool = True, in_order: bool = False,
            **kwargs) -> None:
        state = sys.modules.get("accelerate.state")
        shared = state.PartialState._shared_state if state is not None else {}
        if shared.get("num_processes", 1) > 1:
            from accelerate.logging import get_logger as accelerate_logger

            accelerate_logger(self.logger.name).log(level, msg, *args, main_process_only=main_process_only,
                                                    in_order=in_order, **kwargs)
        elif self.isEnabledFor(level):
            self.logger.log(level, msg, *args, **kwargs)


def get_logger(name: str) -> logging.LoggerAdapter:
    """The logger of a larft module (`get_logger(__name__)`)."""
    return _Logger(logging.getLogger(name), {})


def to_console(level: int = logging.INFO) -> None:
    """What the `larft` command does once: INFO and above as `[larft] message` lines on stderr."""
    root = logging.getLogger(ROOT)
    if any(getattr(h, "_larft_console", False) for h in root.handlers):
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("[larft] %(message)s"))
    handler._larft_console = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
