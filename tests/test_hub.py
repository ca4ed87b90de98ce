"""The hub's batches: slicing and splitting keep seqs and texts aligned."""

from __future__ import annotations

import json

from syncapp.hub import Batch


def batch(first: int, sizes: list[int]) -> Batch:
    ops = [json.dumps({"seq": first + i, "pad": "x" * size}) for i, size in enumerate(sizes)]
    return Batch("s", "e", first, first + len(ops) - 1, ops)


def seqs(part: Batch) -> list[int]:
    return [json.loads(text)["seq"] for text in part.ops]


def test_after_drops_what_was_sent():
    part = batch(5, [1, 1, 1]).after(5)
    assert (part.first, part.last, seqs(part)) == (6, 7, [6, 7])


def test_after_a_seq_before_the_batch_keeps_it_whole():
    whole = batch(5, [1, 1])
    assert whole.after(3) is whole


def test_split_bounds_each_part_and_keeps_order():
    whole = batch(1, [100] * 10)
    parts = whole.split(3 * len(whole.ops[0]) + 1)
    assert [seqs(p) for p in parts] == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10]]
    assert all(p.last == p.first + len(p.ops) - 1 for p in parts)


def test_split_keeps_an_op_larger_than_the_bound_whole():
    parts = batch(1, [10, 1000, 10]).split(100)
    assert [seqs(p) for p in parts] == [[1], [2], [3]]


def test_frame_is_built_once_and_holds_the_ops():
    whole = batch(1, [1, 1])
    assert whole.frame() is whole.frame()
    frame = json.loads(whole.frame())
    assert (frame["type"], frame["stream"], [op["seq"] for op in frame["ops"]]) == (
        "ops",
        "s",
        [1, 2],
    )
