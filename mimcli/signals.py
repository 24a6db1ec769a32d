"""Stopping on a signal: SIGTERM (a cluster's time limit, `kill`), SIGINT (Ctrl-C) and SIGHUP (the
terminal closed) end every command the way an error does, so that locks are released and temporary
files removed, and the command says in one line what was kept.

- `handle_signals()` installs the handlers (main thread only; `mim` does it around every command). A
  signal raises `Stopped` (a BaseException: no `except Exception` swallows it); the exit status is
  128 + the signal's number (SIGINT 130, SIGTERM 143, SIGHUP 129), as a shell reports a signal.
- Inside `deferred()` (the training loop) a signal only marks a stop as requested: the loop finishes
  the step, writes a checkpoint, and raises with `stop_if_requested`. A second signal, or an error
  while a stop is pending (a DataLoader worker that the same signal ended), stops at once.
- `keeping(note)` says what is kept if a stop happens inside the block (a string, or a function asked
  at the moment of the stop); the message joins the notes innermost first.
- `run_forwarding_signals(command)` runs a child process (torchrun under `--gpus`) and hands each
  signal on to it instead of stopping: the child decides how to stop, and its exit status is returned.
- Processes forked from the one that installed the handlers (DataLoader workers) leave the first
  signal to it, which shuts them down in order; a second SIGTERM ends such a child.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
Note = str | Callable[[], str]


class Stopped(BaseException):
    """A signal ended the command; `kept` says what was kept, innermost first."""

    def __init__(self, signum: int, kept: list[str]) -> None:
        super().__init__(signum)
        self.signum = signum
        self.kept = kept

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def message(self) -> str:
        return f"stopped by {self.name}: " + ("; ".join(self.kept) or "nothing was written")


_state: dict[str, int | None] = {"pid": None, "pending": None, "deferring": 0, "child_signals": 0}
_notes: list[Note] = []


def _kept(first: str = "") -> list[str]:
    texts = [first] if first else []
    for note in reversed(_notes):
        text = note() if callable(note) else note
        if text:
            texts.append(text)
    return texts


def _handler(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != _state["pid"]:  # a forked child (DataLoader worker): its parent stops it
        count = int(_state["child_signals"] or 0) + 1
        _state["child_signals"] = count
        if signum == signal.SIGTERM and count > 1:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        return
    if _state["deferring"] and _state["pending"] is None:
        _state["pending"] = signum
        return
    raise Stopped(signum, _kept())


@contextmanager
def handle_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise `Stopped` inside the block (a no-op off the main thread or when
    already installed); the previous handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is _handler:
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    _state.update(pid=os.getpid(), pending=None, deferring=0, child_signals=0)
    for signum in SIGNALS:
        signal.signal(signum, _handler)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _state.update(pid=None, pending=None, deferring=0)


def stop_requested() -> bool:
    return _state["pending"] is not None


def stop_if_requested(detail: str = "") -> None:
    """Raise `Stopped` for a signal received inside `deferred()`, with `detail` as the innermost note."""
    signum = _state["pending"]
    if signum is not None:
        _state["pending"] = None
        raise Stopped(signum, _kept(detail))


@contextmanager
def deferred() -> Iterator[None]:
    """A signal inside the block waits for `stop_if_requested` (or the block's end); an error raised while
    a stop is pending becomes that stop."""
    _state["deferring"] = int(_state["deferring"] or 0) + 1
    try:
        yield
    except Exception:
        signum = _state["pending"]
        if signum is None:
            raise
        _state["pending"] = None
        raise Stopped(signum, _kept()) from None
    finally:
        _state["deferring"] = int(_state["deferring"] or 0) - 1
    stop_if_requested()


@contextmanager
def keeping(note: Note) -> Iterator[None]:
    """`note` says what is kept when a stop (or a KeyboardInterrupt raised by code) ends the block."""
    _notes.append(note)
    try:
        yield
    except KeyboardInterrupt:
        raise Stopped(signal.SIGINT, _kept()) from None
    finally:
        _notes.pop()


def run_forwarding_signals(command: list[str]) -> int:
    """Run `command` to its end; a signal (as `Stopped`) is sent on to it rather than ending this process
    first (subprocess.call would kill the child with SIGKILL, leaving it no time to save)."""
    child = subprocess.Popen(command)
    while True:
        try:
            return child.wait()
        except Stopped as stop:
            child.send_signal(stop.signum)
