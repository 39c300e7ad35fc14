"""SIGINT/SIGTERM during training: finish the current optimizer step, save a checkpoint,
stop cleanly. A second signal aborts at once."""

from __future__ import annotations

import signal
import sys

from transformers import TrainerCallback


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving a checkpoint (exit code 128 + signal)."""

    def __init__(self, signum: int, step: int, checkpoint: str | None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name} after step {step}; checkpoint saved to {checkpoint}; "
            "continue with the same command plus --resume"
        )


class GracefulStopCallback(TrainerCallback):
    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):  # noqa: ARG002
        if self.signum is not None:
            raise KeyboardInterrupt  # second signal: stop now, without a checkpoint
        self.signum = signum
        print(f"\n[larft] {signal.Signals(signum).name}: finishing this step, then saving a checkpoint "
              "(send it again to abort at once)", file=sys.stderr, flush=True)

    def on_train_begin(self, args, state, control, **kwargs):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def on_step_end(self, args, state, control, **kwargs):
        if self._stop_everywhere():
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _stop_everywhere(self) -> bool:
        """Whether any rank was signalled: all ranks must stop at the same step."""
        import torch
        import torch.distributed as dist

        flag = 1.0 if self.signum is not None else 0.0
        if dist.is_available() and dist.is_initialized():
            t = torch.tensor([flag], device="cuda" if dist.get_backend() == "nccl" else "cpu")
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = t.item()
            if flag and self.signum is None:
                self.signum = signal.SIGTERM
        return bool(flag)
