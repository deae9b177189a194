"""Batches of hash-map updates and deletes, run by runs of alike keys.

Models: kernel/bpf/syscall.c ``generic_map_update_batch`` /
``generic_map_delete_batch`` @ v6.18 (and a ``bpf_loop`` in a program): the
map's ``map_update_elem`` / ``map_delete_elem`` for each key in turn.

Problem: the workloads the seeds argue about run millions of operations per
simulated second; one Python call chain per key is far slower than real time.
But most keys of a batch do the same thing: replace an element, add one,
delete one, fail with the same errno.  Such a run of keys only moves counts,
until a key where the allocator would act (a watermark crossing, an RCU
callback to start) or the map fills.

Mechanism: the batch splits into segments of keys that are all present or all
absent.  In a segment the element store says how many keys in a row are
*quiet* (``quiet_replaces``, ``quiet_news``, ``quiet_deletes``); that many run
at once (``replace_run``, ``new_run``, ``delete_run``), the next key runs
through ``BpfHtab.update`` / ``delete`` exactly, and so on.  Keys that fail
with the same errno and change nothing are counted in one step.

Invariant (why the numbers do not change): a quiet run raises no irq_work and
calls nothing that could observe the order inside it, and each key's effect on
every counter is the same as the per-key path's; so the state after the run
equals the state after the keys one by one (``docs/design.md``).  Runs are
used only with counted objects (``Machine.identity`` False), distinct keys,
no instrument, no interruption hook and no irq_work waiting to run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from .base import BPF_EXIST, BPF_F_LOCK, BPF_NOEXIST, E2BIG, EEXIST, ENOENT, ENOMEM

if TYPE_CHECKING:
    from ..sim import Cpu
    from .htab import BpfHtab


def runs_allowed(htab: BpfHtab, cpu: Cpu, keys: Sequence[int]) -> bool:
    """Whether a batch on ``cpu`` may run by runs (otherwise: key by key)."""
    m = htab.m
    return (not m.identity and m.batching and not m.instruments.active and cpu.point_hook is None
            and htab.elems.runs and len(keys) > 1 and len(set(keys)) == len(keys))


def _segments(htab: BpfHtab, keys: Sequence[int]) -> list[tuple[int, int, bool]]:
    """``(start, end, present)`` for the maximal stretches of keys that are all in the map or all not."""
    pres = list(map(htab.table.__contains__, keys))
    n = len(pres)
    out = []
    i = 0
    while i < n:
        cur = pres[i]
        try:
            j = pres.index(not cur, i)
        except ValueError:
            j = n
        out.append((i, j, cur))
        i = j
    return out


def update_runs(htab: BpfHtab, cpu: Cpu, keys: Sequence[int], flags: int, errors: dict[int, int]) -> int:
    """``htab_map_update_elem(key, flags)`` for each of ``keys`` (distinct) in turn; failures counted
    in ``errors`` by errno.  Returns the number of successful updates."""
    store = htab.elems
    f = flags & ~BPF_F_LOCK
    ok = 0
    for i, j, present in _segments(htab, keys):
        while i < j:
            m = 0
            if not cpu.irq_work_list:
                if present:
                    if f == BPF_NOEXIST:
                        errors[EEXIST] = errors.get(EEXIST, 0) + j - i
                        break
                    if htab.percpu or flags & BPF_F_LOCK:  # values copied in place: nothing allocated or freed
                        ok += j - i
                        break
                    m = store.quiet_replaces(cpu)
                else:
                    if f == BPF_EXIST:
                        errors[ENOENT] = errors.get(ENOENT, 0) + j - i
                        break
                    room = htab.attr.max_entries - htab.count
                    if room <= 0:                       # is_map_full() for every key left
                        errors[E2BIG] = errors.get(E2BIG, 0) + j - i
                        break
                    m = min(store.quiet_news(cpu), room)
            if m > 0:
                ks = keys[i:i + min(m, j - i)]
                got = store.replace_run(htab, cpu, ks) if present else store.new_run(htab, cpu, ks)
                ok += got
                i += got
                if got < len(ks):                       # the next key's allocation failed (counted)
                    errors[ENOMEM] = errors.get(ENOMEM, 0) + 1
                    i += 1
                continue
            r = htab.update(cpu, keys[i], flags)        # a key where the allocator acts: exactly
            if r:
                errors[-r] = errors.get(-r, 0) + 1
            else:
                ok += 1
            i += 1
    return ok


def delete_runs(htab: BpfHtab, cpu: Cpu, keys: Sequence[int], errors: dict[int, int]) -> int:
    """``htab_map_delete_elem(key)`` for each of ``keys`` (distinct) in turn; returns the number deleted."""
    store = htab.elems
    ok = 0
    for i, j, present in _segments(htab, keys):
        while i < j:
            m = 0
            if not cpu.irq_work_list:
                if not present:
                    errors[ENOENT] = errors.get(ENOENT, 0) + j - i
                    break
                m = store.quiet_deletes(cpu)
            if m > 0:
                ks = keys[i:i + min(m, j - i)]
                store.delete_run(htab, cpu, ks)
                ok += len(ks)
                i += len(ks)
                continue
            if htab.delete(cpu, keys[i]):
                errors[ENOENT] = errors.get(ENOENT, 0) + 1
            else:
                ok += 1
            i += 1
    return ok
