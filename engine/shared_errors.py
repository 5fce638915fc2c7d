"""The line of an expected mistake met by one process of a distributed run, said by every process.

Without it, the others would show the backend's traceback ("Connection closed by peer") when
their next collective fails, or wait in it (NCCL) until its timeout. The process that meets the
mistake leaves its message in the run's store (share); every process watches the store from a
thread (ErrorWatch) and, when a message appears, prints the same line and ends at once: its main
thread may be blocked in a collective that will never complete. A process whose collective fails
first reads the message too (shared_message). Each waits (at most STOP_WAIT_S) until every
process has stopped before it ends, also at the end of a run that went well, rank 0 a moment
longer: the store may live in it (Fabric's launcher puts it there), and a process that finds it
gone would print the backend's complaint; a process that rank 0 started ends after it (Fabric's
launcher in rank 0 kills the run when one of them ends first with a non-zero status).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

import torch.distributed as dist

# keys of a distributed run's store: the first expected mistake met, and how many processes stopped
ERROR_KEY, STOPPED_KEY = "wesam/error", "wesam/stopped"
RANK0_PID_KEY = "wesam/rank0_pid"  # rank 0's process id: the processes it started wait for it to end
STOP_WAIT_S = 30.0  # how long a stopping process waits for the others to stop
STORE_GRACE_S = 1.0  # how much longer rank 0 waits, so that no other process finds the store gone
WATCH_INTERVAL_S = 0.5  # how often each process looks for a message in the store


def run_store() -> Any | None:
    """The store of this process's distributed run, or None outside one (or once it has ended)."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    try:
        return dist.distributed_c10d._get_default_store()
    except (RuntimeError, ValueError):  # the process group was destroyed meanwhile
        return None


def share(message: str) -> None:
    """Leave `message` for the other processes of this distributed run (none: nothing to do), then
    stop with them (stop_together)."""
    store = run_store()
    if store is None:
        return
    try:
        store.compare_set(ERROR_KEY, "", message)  # the first mistake met stays
    except RuntimeError:  # the store's process has ended: the others are stopping already
        return
    stop_together(store)


def shared_message() -> str | None:
    """The message another process of this distributed run left, after stopping with the others
    (stop_together); None: not a distributed run, no message, or the store has gone with its process."""
    store = run_store()
    if store is None:
        return None
    try:
        if not store.check([ERROR_KEY]):
            return None
        message = store.get(ERROR_KEY).decode()
    except RuntimeError:  # the store's process has ended
        return None
    stop_together(store)
    return message


def stop_together(store: Any) -> None:
    """Count this process as stopped and wait until every process of the run has (at most
    STOP_WAIT_S), rank 0 STORE_GRACE_S longer; a process that rank 0 started waits for it to end
    (outlive_parent)."""
    try:
        if dist.get_rank() == 0:
            store.set(RANK0_PID_KEY, str(os.getpid()))
        stopped = store.add(STOPPED_KEY, 1)
        deadline = time.monotonic() + STOP_WAIT_S
        while stopped < dist.get_world_size() and time.monotonic() < deadline:
            time.sleep(0.05)
            stopped = store.add(STOPPED_KEY, 0)
        rank0_pid = int(store.get(RANK0_PID_KEY)) if dist.get_rank() != 0 and store.check([RANK0_PID_KEY]) else None
    except RuntimeError:  # the store's process has ended
        return
    if dist.get_rank() == 0:
        time.sleep(STORE_GRACE_S)
    elif rank0_pid == os.getppid():
        outlive_parent(rank0_pid)


def outlive_parent(parent: int) -> None:
    """Wait (at most STOP_WAIT_S) until the parent process `parent` has ended. Fabric's launcher starts
    the other processes of a machine from rank 0 and watches them from there: one that ends with a
    non-zero status while rank 0 still runs makes it kill the whole run (SIGKILL, status -9 instead of
    the mistake's 1), which under load can come before rank 0 has ended on its own."""
    deadline = time.monotonic() + STOP_WAIT_S
    while os.getppid() == parent and time.monotonic() < deadline:
        time.sleep(0.05)


class ErrorWatch:
    """`with ErrorWatch() as watch:` looks for another process's message every WATCH_INTERVAL_S;
    when one appears, prints 'Error: <message>' and ends this process (status 1). `watch.claim()`
    tells it that this process stops on its own (it then says nothing); `watch.finish()` that the
    run ended without a mistake (the processes then end together)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.lock = threading.Lock()  # the process stops once: on its own (claim) or by another's message
        self.thread = threading.Thread(target=self.watch, name="wesam-error-watch", daemon=True)

    def __enter__(self) -> ErrorWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.done.set()

    def claim(self) -> None:
        with self.lock:
            self.done.set()

    def finish(self) -> None:
        self.claim()
        self.thread.join()
        store = run_store()
        if store is not None:
            stop_together(store)

    def watch(self) -> None:
        while not self.done.wait(WATCH_INTERVAL_S):
            if run_store() is None:
                continue
            with self.lock:
                message = None if self.done.is_set() else shared_message()
                if message is not None:
                    print(f"Error: {message}", file=sys.stderr, flush=True)
                    os._exit(1)  # the main thread may wait in a collective that never completes
