"""The KV block pool and per-sequence block tables (PagedAttention's block manager).

PagedAttention (Kwon et al., SOSP'23) stores a sequence's keys and values in fixed-size
*blocks* of `block_size` tokens, the way an OS stores a process's memory in pages. A
sequence's `BlockTable` maps its logical blocks (token position // block_size) to physical
blocks in one big pool, so a sequence only ever wastes the unfilled tail of its last block.

Every physical block carries a *reference count*: how many block tables (or caches) point at
it. Sharing is what ref counts buy:
- parallel sampling (n > 1) forks a sequence; the children share the prompt's blocks;
- a prefix cache keeps finished requests' blocks so a new request can point at them.
A shared block must never be written in place: writing into a shared, partly filled last
block first *copies* it (copy-on-write) so the other owners keep their tokens.

Free blocks wait in a queue. `allocate` takes from the head, `free` puts blocks back. The
order matters once blocks can be *cached*: vLLM v1 keeps a freed block's contents findable
until the block is handed out again, so the free queue doubles as the LRU eviction order
(see hash_cache.py). Blocks that hold nothing reusable go to the head (reused first); blocks
worth keeping go to the tail (reused last) — as in vLLM's `BlockPool.free_blocks`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


class OutOfBlocks(RuntimeError):
    """Not enough free KV blocks. A scheduler catches this to wait or to preempt a request."""

    def __init__(self, needed: int, available: int):
        super().__init__(
            f"KV cache is full: need {needed} free blocks, only {available} available; "
            "wait for running sequences to finish, preempt one, or give the pool more blocks"
        )
        self.needed = needed
        self.available = available


@dataclass
class BlockTable:
    """One sequence's view of the pool: logical block i lives in physical block block_ids[i]."""

    block_size: int
    block_ids: list[int] = field(default_factory=list)
    num_tokens: int = 0  # tokens whose KV lives in these blocks

    def slot(self, position: int) -> int:
        """Physical slot (row of the flattened KV cache) that holds token `position`."""
        if not 0 <= position < self.num_tokens:
            raise IndexError(f"position {position} outside 0..{self.num_tokens - 1}")
        block = self.block_ids[position // self.block_size]
        return block * self.block_size + position % self.block_size

    def slot_mapping(self, start: int = 0, end: int | None = None) -> list[int]:
        """Slots for tokens start..end-1: where the model runner writes their K and V."""
        end = self.num_tokens if end is None else end
        return [self.slot(p) for p in range(start, end)]


def blocks_for(num_tokens: int, block_size: int) -> int:
    """Blocks needed to hold num_tokens tokens (the last one may be partly filled)."""
    return -(-num_tokens // block_size)


class BlockPool:
    """`num_blocks` blocks of `block_size` token slots, with ref counts and a free queue."""

    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(
                f"need num_blocks >= 1 and block_size >= 1, got {num_blocks}, {block_size}"
            )
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.ref_cnt = [0] * num_blocks
        # Blocks never handed out yet are implicit: ids next_fresh..num_blocks-1. Handing them
        # out first is what vLLM's queue (initialised to 0..N-1, freed blocks appended) does.
        self._next_fresh = 0
        # Freed blocks, head = next to be reused. OrderedDict = O(1) remove from the middle
        # (needed when a cached block is hit again and leaves the queue).
        self._free_queue: OrderedDict[int, None] = OrderedDict()
        # Called with a block id when a block that was used before is handed out again: the
        # hash prefix cache uses it to forget (evict) that block's contents.
        self.on_reuse: Callable[[int], None] | None = None

    # -- counting -------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        return self.num_blocks - self._next_fresh + len(self._free_queue)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_free_blocks

    def in_free_queue(self, block_id: int) -> bool:
        return block_id in self._free_queue

    def free_queue(self) -> list[int]:
        """Freed blocks in reuse order (head first): for tests and for teaching."""
        return list(self._free_queue)

    # -- allocate / share / free ------------------------------------------------------------
    def allocate(self, n: int) -> list[int]:
        """Hand out n blocks with ref count 1, or raise OutOfBlocks and change nothing."""
        if n > self.num_free_blocks:
            raise OutOfBlocks(n, self.num_free_blocks)
        out = []
        for _ in range(n):
            if self._next_fresh < self.num_blocks:
                block = self._next_fresh
                self._next_fresh += 1
            else:
                block, _ = self._free_queue.popitem(last=False)  # head of the queue
                if self.on_reuse is not None:
                    self.on_reuse(block)
            self.ref_cnt[block] = 1
            out.append(block)
        return out

    def incref(self, block_id: int) -> None:
        """One more owner. A free (cached) block being reused leaves the free queue."""
        if self.ref_cnt[block_id] == 0:
            if block_id not in self._free_queue:
                raise ValueError(f"block {block_id} was never allocated; cannot share it")
            del self._free_queue[block_id]
        self.ref_cnt[block_id] += 1

    def free(self, block_ids: Iterable[int], keep: Callable[[int], bool] | None = None) -> None:
        """One owner fewer for each block, in the order given (first = evicted first).

        A block whose count reaches 0 joins the free queue: at the tail if keep(block) says
        its contents are worth keeping (a cached block: reused last, LRU), else at the head.
        """
        to_head = []
        for b in block_ids:
            if self.ref_cnt[b] <= 0:
                raise ValueError(
                    f"block {b} freed more often than allocated (ref count would go negative)"
                )
            self.ref_cnt[b] -= 1
            if self.ref_cnt[b] == 0:
                if keep is not None and keep(b):
                    self._free_queue[b] = None  # tail
                else:
                    to_head.append(b)
        for b in reversed(to_head):  # keep their relative order at the head
            self._free_queue[b] = None
            self._free_queue.move_to_end(b, last=False)

    def move_to_head(self, block_id: int) -> None:
        """A free block whose contents were just discarded: reuse it before any other."""
        self._free_queue.move_to_end(block_id, last=False)

    # -- block tables -----------------------------------------------------------------------
    def new_table(self, num_tokens: int = 0) -> BlockTable:
        """A block table with room for num_tokens tokens (e.g. a prompt before prefill)."""
        table = BlockTable(self.block_size)
        self.append_tokens(table, num_tokens)
        return table

    def blocks_needed_to_append(self, table: BlockTable, n: int) -> int:
        """New blocks append_tokens(table, n) would take: check before you schedule."""
        need = blocks_for(table.num_tokens + n, self.block_size) - len(table.block_ids)
        if n > 0 and self._last_block_is_shared_and_partial(table):
            need += 1  # the copy-on-write copy
        return need

    def append_tokens(self, table: BlockTable, n: int) -> list[tuple[int, int]]:
        """Make room for n more tokens. Returns the (src, dst) block copies the caller must
        perform on the KV tensors before writing (copy-on-write); usually empty.

        All-or-nothing: on OutOfBlocks the table and the pool are unchanged.
        """
        if n < 0:
            raise ValueError(f"cannot append {n} tokens")
        need = self.blocks_needed_to_append(table, n)
        if need > self.num_free_blocks:
            raise OutOfBlocks(need, self.num_free_blocks)
        copies = []
        if n > 0 and self._last_block_is_shared_and_partial(table):
            # Our next token lands in a block other sequences also read: give us a private
            # copy and drop our reference to the shared one.
            src = table.block_ids[-1]
            (dst,) = self.allocate(1)
            self.free([src])
            table.block_ids[-1] = dst
            copies.append((src, dst))
        new = blocks_for(table.num_tokens + n, self.block_size) - len(table.block_ids)
        table.block_ids.extend(self.allocate(new))
        table.num_tokens += n
        return copies

    def fork(self, table: BlockTable) -> BlockTable:
        """A child sequence that shares every block of `table` (parallel sampling)."""
        for b in table.block_ids:
            self.incref(b)
        return BlockTable(table.block_size, list(table.block_ids), table.num_tokens)

    def free_table(self, table: BlockTable) -> None:
        """The sequence is finished: drop its references (last block first) and empty it."""
        self.free(reversed(table.block_ids))
        table.block_ids.clear()
        table.num_tokens = 0

    def _last_block_is_shared_and_partial(self, table: BlockTable) -> bool:
        if not table.block_ids or table.num_tokens % self.block_size == 0:
            return False  # no block, or the last block is full: the next token opens a new one
        return self.ref_cnt[table.block_ids[-1]] > 1

    def check_invariants(self) -> None:
        """Raise AssertionError if the bookkeeping is inconsistent (used by the tests)."""
        assert all(r >= 0 for r in self.ref_cnt), "negative ref count"
        for b in self._free_queue:
            assert self.ref_cnt[b] == 0, (
                f"block {b} is in the free queue with ref count {self.ref_cnt[b]}"
            )
        in_use = sum(1 for r in self.ref_cnt if r > 0)
        assert in_use + self.num_free_blocks == self.num_blocks, "blocks leaked or double-counted"
