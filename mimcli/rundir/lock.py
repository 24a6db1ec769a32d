"""Locks on run directories, shared by `mim pretrain`/`mim supervised` and every sweep point.

<run dir>.lock sits beside the run directory's real path (so it never makes the directory look started,
and every symlink to the run names the same lock) and holds pid, host and process start time, written
with O_CREAT|O_EXCL. A live holder keeps others out (they exit 2 or skip the point naming it); a lock
left by a dead process on this host is taken over.

`folder_lock` is the short kind: an flock on the folder itself, held while a file in it is read, merged
and replaced (probe.json), and waited for rather than refused.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mimcli.errors import UsageError

STALE_GUARD_SECONDS = 60.0  # a takeover guard older than this was left by a crash
FRESH_LOCK_SECONDS = 10.0  # an unreadable lock younger than this is being written right now


def lock_path(run_dir: Path) -> Path:
    """Beside the run directory, so that it never makes the run directory look started; keyed on its real
    path, so that a symlink to a run (or through a linked folder) takes the same lock as the run itself."""
    real = Path(os.path.realpath(run_dir))
    return real.with_name(real.name + ".lock")


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid from the holder."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _read_lock(path: Path) -> tuple[str, dict[str, Any]] | None:
    """(raw text, parsed holder) or None when the lock is gone; an unreadable holder parses as {}."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except ValueError:
        holder = {}
    return text, holder if isinstance(holder, dict) else {}


def holder_alive(holder: dict[str, Any], path: Path) -> bool:
    """False only when we can tell: same host and the pid is gone (or now another process)."""
    if not holder:  # half-written: a process is creating it right now, or died doing so long ago
        try:
            return time.time() - path.stat().st_mtime < FRESH_LOCK_SECONDS
        except FileNotFoundError:
            return False
    if holder.get("host") != socket.gethostname():
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    start = _process_start(pid)
    return not (start and holder.get("start") and start != holder["start"])


def describe_holder(holder: dict[str, Any]) -> str:
    if not holder:
        return "a process that is writing the lock"
    where = holder.get("host", "?")
    other = "" if where == socket.gethostname() else " (another host: remove the lock if that process is gone)"
    return f"pid {holder.get('pid')} on {where} since {holder.get('time', '?')}{other}"


class PointLock:
    """An O_CREAT|O_EXCL lock file holding pid, host and process start time; a dead holder's lock is taken over."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.text = json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "start": _process_start(os.getpid()),
                "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "argv": sys.argv,
            }
        )
        self.held = False
        self.holder: dict[str, Any] | None = None  # the live holder when acquire() failed
        self.took_over: dict[str, Any] | None = None  # the dead holder whose lock was taken over

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                found = _read_lock(self.path)
                if found is None:
                    continue
                text, holder = found
                if holder_alive(holder, self.path):
                    self.holder = holder
                    return False
                if self._remove_stale(text):
                    self.took_over = holder
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(self.text)
            self.held = True
            return True
        self.holder = (_read_lock(self.path) or ("", {}))[1]
        return False

    def _remove_stale(self, text: str) -> bool:
        """Remove the lock if it still holds `text`, under a guard file so two takers cannot both win."""
        guard = self.path.with_name(self.path.name + ".takeover")
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                if time.time() - guard.stat().st_mtime > STALE_GUARD_SECONDS:
                    guard.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            return False
        try:
            found = _read_lock(self.path)
            if found is not None and found[0] == text:
                self.path.unlink(missing_ok=True)
                return True
            return False
        finally:
            os.close(fd)
            guard.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            found = _read_lock(self.path)
            if found is not None and found[0] == self.text:
                self.path.unlink(missing_ok=True)
            self.held = False


def lock_note(path: Path) -> str:
    """', locked by ...' / ', stale lock of ...' for the dry run; '' when there is no lock."""
    found = _read_lock(path)
    if found is None:
        return ""
    if holder_alive(found[1], path):
        return f", locked by {describe_holder(found[1])}"
    return f", stale lock of {describe_holder(found[1])} (would be taken over)"


@contextmanager
def point_lock(path: Path) -> Iterator[PointLock]:
    """`with point_lock(p) as lock: if lock.held: ...`; released on the way out, exceptions included."""
    lock = PointLock(path)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()


@contextmanager
def run_lock(run_dir: Path) -> Iterator[PointLock]:
    """Hold the run directory's lock for a training command, or raise UsageError naming the holder."""
    run_dir = Path(os.path.abspath(run_dir))
    blocking = next((p for p in run_dir.parents if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise UsageError(f"cannot create {run_dir}: {blocking} is a file, not a folder")
    try:
        lock = PointLock(lock_path(run_dir))
        lock.acquire()
    except OSError as error:
        raise UsageError(f"cannot lock {run_dir}: {error.strerror or error}") from None
    if not lock.held:
        raise UsageError(f"{run_dir} is in use by {describe_holder(lock.holder or {})}")
    try:
        yield lock
    finally:
        lock.release()


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Wait for, then hold, an exclusive flock on `folder` (its inode: symlinks share it) for a
    read-modify-write of a file in it; the kernel releases it if the process dies. No file is created."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock
