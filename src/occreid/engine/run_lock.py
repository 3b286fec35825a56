"""One writer per run folder: `occreid train` holds RUN/.lock while it runs, so a second one is refused.

The lock is an `flock` on the file, which the kernel drops when its process dies, however it dies; the
file's text (pid, host, start time) only names the holder in messages. A lock file left by a dead
process is therefore simply taken over, with a note.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from occreid.errors import ConfigError

LOCK_NAME = ".lock"


class RunInUse(ConfigError):
    """Another process (or another Trainer of this process) is writing into the same run folder."""


class RunLock:
    """An exclusive, non-blocking lock on `folder/.lock`; `release()` (or process exit) frees it."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK_NAME
        self.note: str | None = None  # set when a dead process's lock was taken over
        self._fd: int | None = None
        self._made_folder = not self.path.parent.exists()  # removed again on release if left empty
        self._acquire()

    def _acquire(self) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # the file can be replaced between open and flock; then try the new one
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise RunInUse(self._in_use_message(holder)) from None
            except OSError as e:  # a file system without locks (some network mounts): run unguarded
                os.close(fd)
                self.note = f"cannot lock {self.path} ({e}); a second writer into this folder would not be refused"
                return
            except BaseException:
                os.close(fd)
                raise
            if _same_file(fd, self.path):
                break
            os.close(fd)  # released and removed by its holder after we opened it
        else:
            raise RunInUse(f"{self.path}: cannot take the lock (it keeps being replaced); try again")
        stale = _read_holder(fd)
        if stale:
            self.note = (
                f"took over {self.path} from process {stale.get('pid')} on {stale.get('host')} "
                f"(started {stale.get('started')}), which is no longer running"
            )
        text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode() + b"\n", 0)
        self._fd = fd

    def _in_use_message(self, holder: dict) -> str:
        folder = self.path.parent
        if holder.get("pid") == os.getpid():
            who = "an earlier Trainer of this process (call its close(), or let it finish)"
        else:
            pid, host, started = (holder.get(k, "?") for k in ("pid", "host", "started"))
            who = f"process {pid} on {host} (started {started})"
        return (
            f"run.out={folder} is in use: {who} is training into it ({self.path} is locked); wait for it "
            f"to finish or stop it, or set run.out to another folder"
        )

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove the lock file and drop the lock (removal first, so no one locks a file about to go)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if _same_file(fd, self.path):
                self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)
        if self._made_folder:
            try:
                self.path.parent.rmdir()  # only succeeds when empty: a run that wrote nothing
            except OSError:
                pass

    def __del__(self) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    """The holder's pid/host/start as written in the lock file; {} when empty or unreadable."""
    try:
        data = os.pread(fd, 4096, 0)
        holder = json.loads(data.decode() or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
