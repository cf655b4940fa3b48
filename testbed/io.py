"""Files written at once: a reader (another worker, a resumed sweep) sees the old file or the new
one, never half of one, and a writer killed mid-write leaves a temporary file that names its host
and process (``.NAME.HOST.PID.RANDOM.tmp``), so a store can tell a dead writer's leftovers. And
the file lock under which one process alone makes a thing that others wait for (a run, a base)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

HOST = socket.gethostname().replace(".", "-")  # no dots: the temporary name splits on them


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to write; when the block ends, the file is
    flushed to disk and replaces ``path`` in one step. On any error it is removed and ``path`` is
    left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: Path | str, content: str | bytes) -> None:
    """Write ``content`` (text as UTF-8) to ``path`` at once: readers see the old file or the new."""
    data = content.encode() if isinstance(content, str) else content
    with atomic_path(path) as tmp, open(tmp, "xb") as f:  # "x": mode 0666 & ~umask, as any file
        f.write(data)


class FileLock:
    """An exclusive lock of this process on a lock file (``FileLock.acquire``), which other
    processes, on this host or another sharing the folder, wait for or skip; ``release`` ends it
    and removes the file. ``with FileLock.wait_for(path):`` holds it for a block."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd

    @classmethod
    def acquire(cls, path: Path, wait: bool) -> FileLock | None:
        """The lock of ``path``; None when another process holds it (``wait``: block until then)."""
        fd = _lock(Path(path), wait)
        return None if fd is None else cls(Path(path), fd)

    @classmethod
    def wait_for(cls, path: Path) -> FileLock:
        """The lock of ``path``, once no other process holds it."""
        lock = cls.acquire(path, wait=True)
        assert lock is not None, "a waiting acquire returns the lock"
        return lock

    def release(self) -> None:
        if self.fd < 0:
            return
        self.path.unlink(missing_ok=True)  # while still held: a waiter then sees its file gone, retries
        os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock(path: Path, wait: bool) -> int | None:
    """A descriptor of ``path`` holding its exclusive lock; None if another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as err:  # a file system without locks: go on unguarded rather than not at all
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                os.close(fd)
                raise
            warnings.warn(
                f"{path.parent}: no file locks ({err.strerror}): run one sweep at a time", stacklevel=4
            )
            return fd
        except BaseException:
            os.close(fd)
            raise
        try:  # the holder before us removes the file on release: lock the one now in place
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
