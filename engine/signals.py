"""Stopping a run on a signal: SIGINT (Ctrl-C) or SIGTERM (what a cluster scheduler sends) asks the
loop to save at the end of the step; every rank stops at the same step."""

from __future__ import annotations

import signal
import sys
from typing import Any

import torch


class RunStopped(Exception):
    """The run stopped on a signal after saving; the message says how to continue it."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class StopOnSignal:
    """Within `with`: SIGINT (Ctrl-C) and SIGTERM (what a cluster scheduler sends) set `received`
    to the signal's name instead of stopping at once, so that the loop can save at the end of the
    step. A second Ctrl-C stops at once (KeyboardInterrupt)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    SAVE_AND_STOP = ("saving last.ckpt at the end of this step, then stopping (Ctrl-C again: stop now, losing the "
                     "steps since the last save)")

    def __init__(self, message: str = SAVE_AND_STOP) -> None:
        self.message = message  # printed when a signal arrives
        self.received: str | None = None
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        print(f"\n{self.received} received: {self.message}", file=sys.stderr, flush=True)

    def __enter__(self) -> StopOnSignal:
        for sig in self.SIGNALS:
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def stop_requested(fabric: Any, stopper: StopOnSignal) -> signal.Signals | None:
    """The stop signal that any rank received, or None: all ranks must save and stop at the same
    step, and report the same signal (the highest number, where ranks received different ones)."""
    number = int(getattr(signal, stopper.received)) if stopper.received else 0
    if fabric.world_size > 1:
        number = int(fabric.all_reduce(torch.tensor(float(number), device=fabric.device), reduce_op="max"))
    return signal.Signals(number) if number else None
