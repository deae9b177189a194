"""range_tree: which page offsets of an arena are free.

Models: kernel/bpf/range_tree.c (≈6.13+; a maple tree before), v6.18.  The
tree holds *free* ranges of page offsets; creation marks [0, max_entries)
free.  ``find(len)`` is first fit; ``clear`` takes a range out (allocate or
reserve), ``set`` puts it back (free).

Representation: a sorted list of disjoint half-open intervals.
"""

from __future__ import annotations

import bisect


class RangeTree:
    """Free page offsets as sorted disjoint [start, end) intervals."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def set(self, start: int, length: int) -> None:
        """``range_tree_set``: mark [start, start+length) free (merging neighbours)."""
        if length <= 0:
            return
        end = start + length
        i = bisect.bisect_left(self._starts, start)
        if i > 0 and self._ends[i - 1] >= start:
            i -= 1
            start = min(start, self._starts[i])
        j = i
        while j < len(self._starts) and self._starts[j] <= end:
            end = max(end, self._ends[j])
            j += 1
        self._starts[i:j] = [start]
        self._ends[i:j] = [end]

    def clear(self, start: int, length: int) -> None:
        """``range_tree_clear``: mark [start, start+length) used."""
        end = start + length
        i = bisect.bisect_right(self._starts, start) - 1
        i = max(i, 0)
        new_s: list[int] = []
        new_e: list[int] = []
        j = i
        while j < len(self._starts) and self._starts[j] < end:
            s, e = self._starts[j], self._ends[j]
            if e > start:
                if s < start:
                    new_s.append(s)
                    new_e.append(start)
                if e > end:
                    new_s.append(end)
                    new_e.append(e)
            else:
                new_s.append(s)
                new_e.append(e)
            j += 1
        self._starts[i:j] = new_s
        self._ends[i:j] = new_e

    def is_set(self, start: int, length: int) -> bool:
        """``is_range_tree_set``: is all of [start, start+length) free?"""
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= start + length

    def is_any_clear(self, start: int, length: int) -> bool:
        return not self.is_set(start, length)

    def find(self, length: int) -> int:
        """``range_tree_find``: first free range of ``length`` pages, or -1."""
        for s, e in zip(self._starts, self._ends):
            if e - s >= length:
                return s
        return -1

    def free_pages(self) -> int:
        return sum(e - s for s, e in zip(self._starts, self._ends))
