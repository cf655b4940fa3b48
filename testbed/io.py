"""Files written at once: a reader (another worker, a resumed sweep) sees the old file or the new
one, never half of one, and a writer killed mid-write leaves a temporary file that names its host
and process (``.NAME.HOST.PID.RANDOM.tmp``), so a store can tell a dead writer's leftovers."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
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
