"""Files that are whole or absent: written beside the target, flushed to disk, then renamed over it.

A kill mid-write leaves the previous file (or none); concurrent sweep jobs never read half a file.
Every file the project writes for later reading goes through `atomic_write`. A stop signal that
arrives mid-write is held until the file is in place: a run's handler raises to stop
(training/preemption.py), and raised inside a writer it would leave the write half done (torch.save
then fails with its own error, and the run ends as a crash instead of a stop).
"""

import json
import os
import signal
import socket
import threading
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2", "SIGHUP")  # those a run can catch and stop on (config.py)
HELD_SIGNALS = {getattr(signal, name) for name in STOP_SIGNALS}
HOST = socket.gethostname()


@contextmanager
def signals_held():
    """Stop signals that arrive while the body runs are recorded, then raised again once it is done,
    to the handlers that were there. (Blocking them with a signal mask would not do: the kernel hands
    a process's signal to any thread not blocking it, torch's included, and Python then runs the
    handler on the main thread at once.) Main thread only, where Python runs signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived = []
    previous = {s: signal.getsignal(s) for s in HELD_SIGNALS}
    previous = {s: handler for s, handler in previous.items() if handler is not None}  # None: not Python's to set
    for s in previous:
        signal.signal(s, lambda signum, frame: arrived.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in arrived:
            signal.raise_signal(s)


def pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's process
        return True
    return True


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """`write(f)` into a temporary file beside `path`, fsync, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{HOST}-{os.getpid()}")
    # What a process of this machine killed mid-write (kill -9) left; another machine's (a shared
    # filesystem) cannot be told dead from here.
    for stale in path.parent.glob(f".{path.name}.tmp{HOST}-*"):
        if stale != tmp and not pid_alive(stale.name.rsplit("-", 1)[1]):
            stale.unlink(missing_ok=True)
    try:
        with signals_held():
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: str | Path, data) -> None:
    write_text(path, json.dumps(data, indent=2, default=str))
