"""Checks for lab 20: allocating KV blocks through a block table (PagedAttention).

The learner writes

    allocate_slots(block_table, num_tokens, num_new_tokens, free_blocks, block_size)

which makes room for num_new_tokens more tokens after the num_tokens already stored in
`block_table` (a list of physical block ids), taking new blocks from the *front* of
`free_blocks` (a list, changed in place) and appending them to `block_table` (also in
place). It returns the slot mapping: for each new token, the flat KV slot it will be written
to (physical block * block_size + offset in the block). With too few free blocks it raises
OutOfBlocks and changes nothing, so a scheduler can simply try again later.
"""

from __future__ import annotations

import copy
import random

from labkit.checks import ExerciseFailed
from labkit.kvcache.block_pool import OutOfBlocks


def reference_allocate_slots(block_table: list[int], num_tokens: int, num_new_tokens: int,
                             free_blocks: list[int], block_size: int) -> list[int]:
    total = num_tokens + num_new_tokens
    need = -(-total // block_size) - len(block_table)  # ceil: a partly filled block counts
    if need > len(free_blocks):
        raise OutOfBlocks(need, len(free_blocks))  # before touching anything: all or nothing
    for _ in range(max(need, 0)):
        block_table.append(free_blocks.pop(0))
    return [block_table[p // block_size] * block_size + p % block_size
            for p in range(num_tokens, total)]


def _edge_cases():
    # (block_table, num_tokens, num_new_tokens, free_blocks, block_size)
    return [
        ([], 0, 0, [3, 1], 4),  # nothing to do
        ([], 0, 1, [5, 3], 4),  # the very first token opens a block
        ([], 0, 8, [7, 2, 9], 4),  # a prompt that fills exactly two blocks
        ([7], 3, 1, [2], 4),  # the last free slot of a block: no new block
        ([7], 4, 1, [2], 4),  # the block is full: the next token opens a new one
        ([7], 4, 0, [2], 4),  # a full block and no new tokens: nothing allocated
        ([7], 2, 6, [2], 4),  # crosses a boundary, exactly the free blocks there are
        ([7], 4, 5, [2], 4),  # needs 2 blocks, only 1 free: out of blocks, nothing changes
        ([], 0, 1, [], 16),  # an empty pool
        ([4, 0], 5, 30, [1, 2, 3, 5, 6, 7, 8], 1),  # block_size 1: one block per token
        ([11, 3], 32, 100, list(range(20, 40)), 16),  # a long prefill chunk
        ([11, 3], 31, 1, [], 16),  # the last slot of the table, with an empty free list
    ]


def _describe(case) -> str:
    table, num_tokens, new, free, bs = case
    return (f"allocate_slots(block_table={table}, num_tokens={num_tokens}, "
            f"num_new_tokens={new}, free_blocks={free}, block_size={bs})")


def _run_one(fn, case):
    """Run fn on a copy of the case; return (result or exception, table after, free after)."""
    table, num_tokens, new, free, bs = copy.deepcopy(case)
    try:
        out = fn(table, num_tokens, new, free, bs)
    except OutOfBlocks as e:
        out = e
    return out, table, free


def _compare(fn, case) -> tuple:
    exp, exp_table, exp_free = _run_one(reference_allocate_slots, case)
    where = _describe(case)
    try:
        got, got_table, got_free = _run_one(fn, case)
    except NotImplementedError as e:
        raise ExerciseFailed(f"allocate_slots: not implemented yet — {e}") from None
    except Exception as e:  # noqa: BLE001 - report any crash with the failing input
        raise ExerciseFailed(f"{where} raised {type(e).__name__}: {e}") from None
    if isinstance(exp, OutOfBlocks):
        if not isinstance(got, OutOfBlocks):
            raise ExerciseFailed(f"{where}: expected OutOfBlocks (needs {exp.needed} new "
                                 f"blocks, {exp.available} free), got {got!r}")
        if (got_table, got_free) != (exp_table, exp_free):
            raise ExerciseFailed(f"{where}: raised OutOfBlocks but changed its inputs "
                                 f"(block_table -> {got_table}, free_blocks -> {got_free}); "
                                 "check for room before taking any block")
        return exp, exp_table, exp_free
    if isinstance(got, OutOfBlocks):
        raise ExerciseFailed(f"{where}: expected slots {exp}, but it raised OutOfBlocks: {got}")
    if got is None or list(got) != exp:
        raise ExerciseFailed(f"{where}: expected slot mapping {exp}, got {got!r}")
    if got_table != exp_table:
        raise ExerciseFailed(f"{where}: expected block_table {exp_table} afterwards, "
                             f"got {got_table}")
    if got_free != exp_free:
        raise ExerciseFailed(f"{where}: expected free_blocks {exp_free} afterwards (take "
                             f"from the front), got {got_free}")
    return exp, exp_table, exp_free


def check_allocate_slots(fn, seeds: int = 12) -> int:
    """Edge cases (exact fits, block boundaries, out of blocks), then random schedules."""
    n = 0
    for case in _edge_cases():
        _compare(fn, case)
        n += 1
    for seed in range(seeds):  # a toy scheduler: sequences take turns growing from one pool
        rng = random.Random(seed)
        block_size = rng.choice([1, 2, 4, 16])
        free = list(range(rng.randint(4, 24)))
        rng.shuffle(free)
        seqs = [([], 0) for _ in range(rng.randint(1, 4))]
        for _ in range(60):
            i = rng.randrange(len(seqs))
            table, num_tokens = seqs[i]
            new = rng.choice([0, 1, 1, 1, rng.randint(1, 3 * block_size)])
            out, table_after, free = _compare(fn, (table, num_tokens, new, free, block_size))
            n += 1
            if isinstance(out, OutOfBlocks):  # sequence i finishes: its blocks go back
                free, seqs[i] = free + table, ([], 0)
            else:
                seqs[i] = (table_after, num_tokens + new)
    print(f"✔ allocate_slots: passed {n} cases (exact fits, block boundaries, out of blocks, "
          f"{seeds} random schedules)")
    return n
