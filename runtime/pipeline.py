"""Keep the model busy on folder runs: decode ahead and write behind, in bounded thread pools.

Decoding (Pillow), inference (onnxruntime) and encoding overlays (Pillow, zlib) all release the
GIL, so threads overlap them. Both pools are bounded: at most `ahead` batches are decoded in
advance and at most `limit` writes are pending, so memory stays flat however large the folder.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Generic, ParamSpec, TypeVar

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")


def prefetched_batches(
    items: Sequence[T], batch_size: int, decode: Callable[[T], R], *, workers: int = 2, ahead: int = 2
) -> Iterator[list[tuple[int, Future[R]]]]:
    """Batches of (index, future of `decode(item)`) in order, decoded by `workers` threads while the
    caller works on earlier batches; at most `ahead` batches beyond the current one are in flight."""
    starts = iter(range(0, len(items), batch_size))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gapcam-decode") as pool:
        pending: collections.deque[list[tuple[int, Future[R]]]] = collections.deque()

        def submit_next() -> None:
            start = next(starts, None)
            if start is not None:
                pending.append([(i, pool.submit(decode, items[i])) for i in range(start, min(start + batch_size, len(items)))])

        for _ in range(max(1, ahead)):
            submit_next()
        while pending:
            batch = pending.popleft()
            submit_next()
            yield batch


class BoundedWriter(Generic[R]):
    """A thread pool for output work whose queue never holds more than `limit` unfinished tasks:
    `submit` waits for the oldest when full. Each task's result goes to `collect`, in submission
    order, on the caller's thread, as soon as it and every earlier task are done."""

    def __init__(self, collect: Callable[[R], None], workers: int = 2, limit: int = 64):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gapcam-write")
        self._pending: collections.deque[Future[R]] = collections.deque()
        self._collect = collect
        self._limit = limit

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> None:
        while self._pending and (len(self._pending) >= self._limit or self._pending[0].done()):
            self._collect(self._pending.popleft().result())
        self._pending.append(self._pool.submit(fn, *args, **kwargs))

    def __enter__(self) -> BoundedWriter[R]:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            while self._pending:
                future = self._pending.popleft()
                if exc_type is None:
                    self._collect(future.result())
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
