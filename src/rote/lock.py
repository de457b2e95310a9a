"""One writer per folder: an exclusive `fcntl.flock` on `<folder>/.rote.lock`, held while rote writes there.

Two `rote run`s in one run folder would redo the same stages and overwrite each other's files
(or, with different configs, mix two runs in one record). The second writer stops at once with a
LockedError naming the holder (pid, host, start time, written into the lock file).

The operating system releases a flock when its process dies, however it dies (SIGKILL
included), so a lock can never be stale: if the lock file still names a process but the lock is
free, that process ended without tidying up, and the new writer takes over with a note. (flock
is not reliable across machines on some network file systems; the host in the message helps there.)
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from rote.errors import LockedError, RunError

LOCK_FILE = ".rote.lock"


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']}, started {info['started']}: {info.get('command', '?')}"
    except (ValueError, KeyError, TypeError):
        return "a process that left no details"


def check_folder(folder: str | Path, what: str = "run folder") -> None:
    """Refuse (RunError) a folder that cannot be made because it, or a folder above it, is a file:
    mkdir's own error (NotADirectoryError, FileExistsError) names neither the setting nor the file."""
    folder = Path(folder)
    for path in (folder, *folder.parents):
        if path.is_dir():
            return
        if path.exists() or path.is_symlink():  # a file, or a link to nothing
            raise RunError(f"{what} {folder} cannot be made: {path} is a file, not a folder; write elsewhere")


@contextmanager
def hold(folder: str | Path, what: str = "run folder"):
    """Hold the folder's lock for the `with` block; creates the folder. Raises LockedError at once
    when another process holds it (no waiting: a run takes minutes to hours)."""
    folder = Path(folder)
    check_folder(folder, what)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError: another open file description holds it
        previous = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        os.close(fd)
        raise LockedError(f"{what} {folder} is in use by another rote process ({_holder(previous)}); wait for it "
                          f"to finish, stop it, or write elsewhere") from None
    try:
        previous = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        if previous.strip():  # a holder that died without releasing (the OS released its flock for it)
            print(f"[rote] note: taking over the lock of {folder} from {_holder(previous)}, which is no longer "
                  f"running (the operating system releases a dead process's lock)", file=sys.stderr, flush=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "command": " ".join(sys.argv)[:200]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        yield
    finally:
        # Empty the file before unlocking: a lock file with content and no holder means a dead holder.
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
