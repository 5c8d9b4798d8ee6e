"""Which record each process reads, and when: the global order and one process's stream through it.

Global order: epoch e is a permutation of the N records seeded by (seed, e) (grain's index shuffle with seed
``seed + e``), or 0..N-1 when not shuffling; epochs repeat forever. Global batch k holds global positions
[k*B, (k+1)*B). Process p of P (b = B // P rows each) takes the contiguous slice [k*B + p*b, k*B + (p+1)*b), so
the process batches of step k, concatenated in process order, are the one-process batch of step k.

A process's *stream* is its slices of successive global batches, in order: stream position s is global position
(s // b) * B + p * b + s % b. A process that skips an unreadable record fills its batch from its own stream, so
skips never move another process's rows.
"""

from __future__ import annotations

import sys

import grain


def global_order(num_records: int, *, seed: int, shuffle: bool) -> grain.MapDataset:
    """Global position -> record index, for every position (infinite: epochs repeat)."""
    order = grain.MapDataset.range(num_records)
    if shuffle:
        order = order.shuffle(seed=seed)
    return order.repeat()


class ProcessStream(grain.MapDataset):
    """Stream position (from ``start``) -> record index: this process's rows of successive global batches."""

    def __init__(self, order: grain.MapDataset, *, batch_size: int, process_index: int, process_count: int,
                 start: int = 0):
        super().__init__(order)
        self._global_batch = batch_size
        self._rows = batch_size // process_count
        self._offset = process_index * self._rows
        self._start = start

    def __len__(self) -> int:
        return sys.maxsize - self._start

    def global_position(self, index: int) -> int:
        s = self._start + index
        return (s // self._rows) * self._global_batch + self._offset + s % self._rows

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        return self._parent[self.global_position(index)]

    def __str__(self) -> str:
        return (f"ProcessStream(rows={self._rows} at offset {self._offset} of {self._global_batch}, "
                f"start={self._start})")
