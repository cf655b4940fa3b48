"""The random streams of a batched core: one generator for the whole batch, or one per population
member, the rows member-major (``len(streams)`` equal blocks). A core of K x B rows stepped with
K streams draws exactly what K cores of B rows, each with its member's stream, would draw: each
member's rows draw from its own stream, in row order, so no member's episodes change another's."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

Streams = np.random.Generator | Sequence[np.random.Generator]


def member_parts(
    rows: np.ndarray, batch_size: int, streams: Streams
) -> Iterator[tuple[np.ndarray, np.random.Generator]]:
    """``rows`` (sorted row indices of a batch of ``batch_size``) split by member, each part with
    its member's stream; members with no rows are skipped (they draw nothing, as their own core
    would not)."""
    if isinstance(streams, np.random.Generator):
        yield rows, streams
        return
    per = member_block(batch_size, len(streams))
    cuts = np.searchsorted(rows, np.arange(per, batch_size, per))
    for part, stream in zip(np.split(rows, cuts), streams, strict=True):
        if part.size:
            yield part, stream


def member_draw(batch_size: int, streams: Streams, draw) -> np.ndarray:
    """``draw(stream, n)`` for every row: once for the batch, or once per member's block."""
    if isinstance(streams, np.random.Generator):
        return draw(streams, batch_size)
    per = member_block(batch_size, len(streams))
    return np.concatenate([draw(stream, per) for stream in streams])


def member_block(batch_size: int, members: int) -> int:
    """Rows per member (a batch of ``batch_size`` rows in ``members`` equal member-major blocks)."""
    if members < 1 or batch_size % members:
        raise ValueError(f"a batch of {batch_size} rows cannot be split among {members} members' streams")
    return batch_size // members
