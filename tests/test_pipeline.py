"""runtime.pipeline: decode-ahead and write-behind stay in order and bounded."""

import threading
import time

import pytest

from runtime.pipeline import BoundedWriter, prefetched_batches


def test_prefetched_batches_keep_order_and_decode_at_most_a_few_batches_ahead():
    started, lock = [], threading.Lock()

    def decode(item):
        with lock:
            started.append(item)
        return item * 10

    consumed = 0
    for batch in prefetched_batches(list(range(100)), 8, decode, workers=2, ahead=2):
        values = [future.result() for _, future in batch]
        assert values == [index * 10 for index, _ in batch]
        assert [index for index, _ in batch] == list(range(consumed, min(consumed + 8, 100)))
        consumed += len(batch)
        with lock:
            assert len(started) <= consumed + 2 * 8  # never more than `ahead` batches beyond what was taken
    assert sorted(started) == list(range(100))


def test_a_decode_error_stays_with_its_item():
    def decode(item):
        if item == 3:
            raise ValueError("bad item")
        return item

    outcomes = [(index, future.exception()) for batch in prefetched_batches(list(range(6)), 4, decode) for index, future in batch]
    assert [index for index, error in outcomes if error is not None] == [3]


def test_bounded_writer_keeps_order_and_limit():
    running, most, lock = [0], [0], threading.Lock()

    def work(value):
        with lock:
            running[0] += 1
        time.sleep(0.002)
        with lock:
            running[0] -= 1
        return value

    collected = []
    with BoundedWriter(collected.append, workers=2, limit=3) as writer:
        for value in range(20):
            writer.submit(work, value)
            most[0] = max(most[0], len(writer._pending))
            assert len(collected) + len(writer._pending) == value + 1  # results leave as they are collected
    assert collected == list(range(20)) and most[0] <= 3


def test_bounded_writer_raises_what_a_task_raised():
    def fail():
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        with BoundedWriter(lambda result: None) as writer:
            writer.submit(fail)
