"""``WorkdirLock``: one training run per workdir at a time.

Two ``train.py`` processes on one workdir would interleave their checkpoints and the second one's metrics rewrite
would drop the first one's history. The run therefore holds an exclusive ``fcntl.flock`` on ``WORKDIR/.lock`` for
its whole life; the file holds the holder's pid and host, so a second run fails naming them, before it modifies
anything in the workdir.

A lock left by a run that died (killed, crashed, machine rebooted) is no obstacle: the kernel releases a ``flock``
when its holder's process ends, so the next run takes it; the pid and host still written in the file are then only
a record of the last holder. The file itself is never deleted (deleting a lock file while another process waits on
it would let two runs hold locks on two different files).

Local paths only: a path with ``://`` (``gs://``, ...) has no ``flock``, and there is no lock (the run is not
guarded against a second one). Within a multi-process run, all processes share the workdir; only process 0 takes
the lock (the trainer does that), the others rely on it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket

LOCK_FILE = ".lock"


class WorkdirLockedError(RuntimeError):
    """The workdir is locked by another live run."""


class WorkdirLock:
    """An exclusive, non-blocking lock on ``WORKDIR/.lock``; a context manager, or ``acquire()`` / ``release()``.

    ``acquire`` creates the workdir if needed (the one thing it may create), then the lock file, and raises
    ``WorkdirLockedError`` naming the holder's pid and host when another process holds it; the lock file's content
    is rewritten only once the lock is ours."""

    def __init__(self, workdir: str | os.PathLike):
        workdir = os.fspath(workdir)
        if "://" in workdir:
            raise ValueError(f"{workdir}: a WorkdirLock needs a local path (flock does not exist on {workdir!r})")
        self.workdir = workdir
        self.path = os.path.join(workdir, LOCK_FILE)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        os.makedirs(self.workdir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                raise
            raise WorkdirLockedError(
                f"{self.workdir} is in use by another training run ({holder}; lock file {self.path}). Two runs on "
                f"one workdir would mix their checkpoints and metrics: wait for it to finish, stop it, or choose "
                f"another --workdir. (A lock whose holder has died is released by the kernel: no need to delete "
                f"{LOCK_FILE}.)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} host {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> WorkdirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    """"pid P host H" as the holder wrote it (or a note that it has not written it yet)."""
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "pid and host not written yet: it is starting"
