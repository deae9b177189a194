"""``bpfmem arena ...`` and ``bpfmem bench arena-vs-htab``."""

from __future__ import annotations

import ctypes as C
import json
import random
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from .params import Finite, html_option, write_html
from .. import __version__
from ..arena import BPF_F_MMAPABLE, BPF_F_NO_USER_CONV, BPF_F_SEGV_ON_FAULT, ArenaError, BpfArena, UserSpace
from ..mm import MemCgroup
from ..report.units import fmt_bytes, plural
from ..userspace.arena_api import BpfSide, PageFragAllocator, UserSide
from ..userspace.arena_htab import ArenaHtab, HtabElem
from .main import KernelUnavailableError, Refused, bench, cli, fail

PAGE = 4096
FLAG_NAMES = {"mmapable": BPF_F_MMAPABLE, "segv_on_fault": BPF_F_SEGV_ON_FAULT, "no_user_conv": BPF_F_NO_USER_CONV,
              "no_prealloc": 1}


def parse_flags(text: str) -> int:
    flags = 0
    for name in filter(None, (t.strip() for t in text.split(","))):
        if name not in FLAG_NAMES:
            fail("--flags", f"unknown flag {name!r}; allowed: {', '.join(FLAG_NAMES)}")
        flags |= FLAG_NAMES[name]
    return flags


def parse_int(option: str, text: str, bits: int = 64) -> int:
    """An unsigned integer of at most ``bits`` bits, decimal or 0x-hex."""
    try:
        v = int(text, 0)
    except ValueError:
        fail(option, f"not an integer (decimal or 0x-hex): {text!r}")
        raise
    if not 0 <= v < 1 << bits:
        fail(option, f"{text} is not a {bits}-bit unsigned value (0 .. {hex((1 << bits) - 1)})")
    return v


def need_kernel() -> None:
    from ..kernel.probe import require_kernel
    reason = require_kernel(("bpf", "map:arena", "memcg"))
    if reason:
        raise KernelUnavailableError(f"kernel backend unavailable: {reason}")


HEX_PREFIXES = ("user_vm", "kern_vm", "table_ptr", "bpf_", "user_", "kern_", "address", "map_extra")


def cell(key: str, v: Any) -> str:
    """A value as a person reads it: yes/no, addresses in hex, bytes with units, page ranges, one event
    per line, 'none' for an empty list."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if v is None:
        return "-"
    if isinstance(v, int):
        if key.startswith(HEX_PREFIXES):
            return hex(v)
        if key.startswith(("charged", "memlock")) or key.endswith("_bytes"):
            return fmt_bytes(v)
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.1f}"
    if isinstance(v, (list, tuple)):
        if not v:
            return "none"
        if all(isinstance(x, (list, tuple)) and len(x) == 2 for x in v):
            return ", ".join(f"{a}" if a == b else f"{a}–{b}" for a, b in v)
        return "\n".join(cell(key, x) for x in v)
    if isinstance(v, dict):
        return "; ".join(f"{k}: {cell(k, x)}" for k, x in v.items()) or "none"
    return str(v)


def emit(doc: dict[str, Any], as_json: bool, table: Table | None) -> None:
    if as_json:
        click.echo(json.dumps(doc, indent=1))
    elif table is not None:
        Console().print(table)


@cli.group("arena")
def arena_group() -> None:
    """The BPF arena: create, inspect, translate pointers, run the seed's example."""


def _ranges(pgoffs: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for p in sorted(pgoffs):
        if out and out[-1][1] == p - 1:
            out[-1][1] = p
        else:
            out.append([p, p])
    return out


@arena_group.command("create")
@click.option("--max-entries", type=click.IntRange(0, (1 << 32) - 1), required=True,
              help="Arena size in 4 KiB pages (attr.max_entries, a 32-bit field; the kernel allows 1..1048576).")
@click.option("--flags", "flags_text", default="mmapable", show_default=True,
              help=f"Comma list of {', '.join(FLAG_NAMES)}.")
@click.option("--map-extra", default="0", show_default=True, help="Requested user address (0: first mmap picks).")
@click.option("--backend", type=click.Choice(["model", "kernel"]), default="model", show_default=True,
              help="Create it in the model, or on the running kernel (root, BPF).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def arena_create(max_entries: int, flags_text: str, map_extra: str, backend: str, as_json: bool) -> None:
    """Create an arena with the kernel's rules and mmap it: the errno, or where it landed."""
    flags, extra = parse_flags(flags_text), parse_int("--map-extra", map_extra)
    doc: dict[str, Any] = {"tool": "bpfmem", "version": __version__, "command": "arena create", "backend": backend,
                           "max_entries": max_entries, "flags": flags, "map_extra": extra}
    try:
        if backend == "model":
            a = BpfArena(max_entries, flags, extra, memcg=MemCgroup())
            start = a.mmap(extra, max_entries * PAGE)
            a.close()
        else:
            need_kernel()
            from ..kernel.arena import KernelArena
            with KernelArena(max_entries, flags, extra) as ka:
                start = ka.mmap(extra)
        doc.update(result="ok", user_vm_start=start, user_vm_end=start + max_entries * PAGE, memlock=0)
    except ValueError as e:                # a value attr.max_entries/map_extra cannot hold: never truncated
        fail("--max-entries" if "max_entries" in str(e) else "--map-extra", str(e))
    except OSError as e:
        import errno as errno_mod
        doc.update(result=errno_mod.errorcode.get(e.errno or 0, str(e.errno)), error=str(e))
    t = Table(title=f"arena create ({backend})")
    t.add_column("field")
    t.add_column("value")
    for k in ("result", "user_vm_start", "user_vm_end", "memlock", "error"):
        if k in doc:
            v = doc[k]
            t.add_row(k, cell(k, v))
    emit(doc, as_json, t)
    if doc.get("result") != "ok":
        raise Refused(f"arena create --max-entries {max_entries} --flags {flags_text} --map-extra {map_extra} "
                      f"on the {backend}: {doc.get('error')}")


@arena_group.command("translate")
@click.argument("address")
@click.option("--user-vm-start", default="0x7f0000000000", show_default=True,
              help="User address where the arena is mapped (hex or decimal bytes).")
@click.option("--no-user-conv", is_flag=True, help="The arena has BPF_F_NO_USER_CONV.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def arena_translate(address: str, user_vm_start: str, no_user_conv: bool, as_json: bool) -> None:
    """Show one arena address in every form: user, BPF (32-bit), kernel, page offset."""
    start = parse_int("--user-vm-start", user_vm_start)
    addr = parse_int("ADDRESS", address)
    flags = BPF_F_MMAPABLE | (BPF_F_NO_USER_CONV if no_user_conv else 0)
    try:
        a = BpfArena(1 << 20 if start % (1 << 32) == 0 else 16, flags, start, memcg=None)
    except ArenaError as e:
        fail("--user-vm-start", str(e))
        raise
    if addr >= 1 << 32 and not start <= addr < start + (1 << 32):
        a.close()
        fail("ADDRESS", f"{hex(addr)} is neither a 32-bit BPF arena pointer nor a user address of this arena "
                        f"({hex(start)} .. {hex(start + (1 << 32) - 1)})")
    ptr32 = a.cast_kern(addr)
    doc = {"tool": "bpfmem", "command": "arena translate", "input": addr, "bpf_pointer": ptr32,
           "user_pointer": a.cast_user(ptr32), "kernel_address": a.kern_addr(ptr32),
           "pgoff": a.compute_pgoff(addr), "is_null_for_bpf": ptr32 == 0,
           "stored_form": "bpf (32-bit)" if no_user_conv else "user (64-bit)"}
    a.close()
    t = Table(title="arena pointer forms")
    t.add_column("form")
    t.add_column("value")
    for k, v in doc.items():
        if k not in ("tool", "command"):
            t.add_row(k, cell(k, v) if not isinstance(v, int) or isinstance(v, bool) else hex(v))
    emit(doc, as_json, t)


@arena_group.command("inspect")
@click.option("--max-entries", type=click.IntRange(1, 1 << 20), default=1 << 20, show_default=True,
              help="Arena size in 4 KiB pages.")
@click.option("--alloc", "alloc_cnt", type=click.IntRange(0, 1 << 20), default=4, show_default=True,
              help="Pages a program allocates (bpf_arena_alloc_pages).")
@click.option("--touch", default="", help="Comma list of page offsets user space touches [default: none].")
@click.option("--reserve", default="", help="Comma list of page offsets to reserve [default: none].")
@click.option("--flags", "flags_text", default="mmapable", show_default=True,
              help=f"Comma list of {', '.join(FLAG_NAMES)}.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def arena_inspect(max_entries: int, alloc_cnt: int, touch: str, reserve: str, flags_text: str,
                  as_json: bool) -> None:
    """Build an arena on the model and show which pages exist, what they cost and who paid."""
    flags = parse_flags(flags_text)
    root = MemCgroup()
    map_cg, task_cg = root.child("map-creator"), root.child("user-task")
    try:
        a = BpfArena(max_entries, flags, memcg=map_cg, user=UserSpace(memcg=task_cg))
    except ArenaError as e:
        fail("--max-entries", str(e))
        raise
    a.mmap(0, max_entries * PAGE)
    notes = []
    for text in filter(None, reserve.split(",")):
        p = parse_int("--reserve", text)
        rc = a.bpf_arena_reserve_pages(a.user_vm_start + p * PAGE, 1)
        notes.append(f"reserve page {p}: {rc}")
    if alloc_cnt:
        got = a.bpf_arena_alloc_pages(0, alloc_cnt)
        notes.append(f"bpf_arena_alloc_pages(0, {alloc_cnt}) = {hex(got)}" +
                     (" (BPF pointer 0 = NULL!)" if got and not got & 0xFFFF_FFFF else ""))
    for text in filter(None, touch.split(",")):
        p = parse_int("--touch", text)
        try:
            a.user_write(a.user_vm_start + p * PAGE, b"\x01")
            notes.append(f"user touch page {p}: ok")
        except Exception as e:  # ArenaFault: the process would get SIGSEGV
            notes.append(f"user touch page {p}: {e}")
    st = a.statistics()
    doc = {"tool": "bpfmem", "version": __version__, "command": "arena inspect", "modelled": True,
           "user_vm_start": st.user_vm_start, "user_vm_end": st.user_vm_end, "pages": st.pages,
           "populated": _ranges(list(a.pages)), "reserved": st.reserved, "free": st.free,
           "charged_to_map_creator": map_cg.usage, "charged_to_user_task": task_cg.usage, "memlock": st.memlock,
           "kern_vm_start": a.kern_vm_start, "events": notes, "kernel_side_faults": a.faults}
    a.close()
    t = Table(title="arena inspect (model)")
    t.add_column("field")
    t.add_column("value")
    for k, v in doc.items():
        if k in ("tool", "version", "command"):
            continue
        t.add_row(k, cell(k, v))
    emit(doc, as_json, t)


def run_example(backend: str, elements: int, direction: str) -> dict[str, Any]:
    """The seed's hash table: built by one side, consumed by the other."""
    out: dict[str, Any] = {"backend": backend, "elements": elements, "direction": direction}
    if backend == "model":
        root = MemCgroup()
        cg = root.child("map")
        a: Any = BpfArena(1 << 20, BPF_F_MMAPABLE, memcg=cg, user=UserSpace(memcg=cg))
        a.mmap(0, 1 << 32)
        usage = lambda: cg.usage  # noqa: E731
    else:
        need_kernel()
        from ..kernel import syscall as S
        from ..kernel.arena import KernelArena, arena_create
        from ..kernel.cgroup import ChildMemcg, create_in, memcg_layout
        kcg = ChildMemcg(memcg_layout(), "arena")  # type: ignore[arg-type]
        fd = create_in(kcg, lambda: arena_create(1 << 16, BPF_F_MMAPABLE).release())
        a = KernelArena(1 << 16, BPF_F_MMAPABLE, bmap=S.BpfMap(fd, 33, 0, 0, 1 << 16, BPF_F_MMAPABLE))
        a.mmap()
        usage = kcg.usage
    try:
        user = UserSide(a, first_page=(a.user_vm_end - a.user_vm_start) // PAGE // 2)
        if direction == "bpf-to-user":
            bpf = BpfSide(a)
            alloc = PageFragAllocator(bpf)
            h = ArenaHtab.create(bpf, alloc, 128)
            for k in range(elements):
                h.update(k, 2 * k)
            reader = ArenaHtab(user, PageFragAllocator(user), a.cast_user(h.ptr))
            out["null_pages_skipped"] = alloc.null_pages_skipped
        else:
            ua = PageFragAllocator(user)
            h = ArenaHtab.create(user, ua, 128)
            for k in range(elements):
                h.update(k, 2 * k)
            reader = (ArenaHtab(BpfSide(a), PageFragAllocator(BpfSide(a)), h.ptr & 0xFFFF_FFFF)
                      if backend == "model" else ArenaHtab(user, ua, h.ptr))
            out["reader"] = "bpf side (model)" if backend == "model" else "user space, same mapping (kernel)"
        items = dict(reader.items())
        out.update(table_ptr_user=a.cast_user(h.ptr & 0xFFFF_FFFF), table_ptr_bpf=h.ptr & 0xFFFF_FFFF,
                   read_back=len(items), correct=items == {k: 2 * k for k in range(elements)},
                   charged_bytes=usage(), bytes_per_element=usage() / max(elements, 1))
    finally:
        a.close()
        if backend == "kernel":
            kcg.remove()
    return out


@arena_group.command("example")
@click.option("--elements", type=click.IntRange(1, 1_000_000), default=1000, show_default=True,
              help="Key/value pairs the table holds.")
@click.option("--direction", type=click.Choice(["bpf-to-user", "user-to-bpf"]), default="bpf-to-user",
              show_default=True, help="Which side builds the table (the other reads it back).")
@click.option("--backend", type=click.Choice(["model", "kernel"]), default="model", show_default=True,
              help="A model arena, or a real one on the running kernel (root, BPF).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def arena_example(elements: int, direction: str, backend: str, as_json: bool) -> None:
    """The seed's hash table with linked-list buckets in an arena, built by one side, read by the other."""
    if backend == "kernel" and direction == "bpf-to-user":
        fail("--direction", "on the kernel backend only user space builds the table (user-to-bpf); "
                            "the model runs both directions")
    doc = {"tool": "bpfmem", "version": __version__, "command": "arena example", **run_example(backend, elements,
                                                                                                 direction)}
    t = Table(title=f"arena hash table example ({backend}, {direction})")
    t.add_column("field")
    t.add_column("value")
    for k, v in doc.items():
        if k not in ("tool", "version", "command"):
            t.add_row(k, cell(k, v))
    emit(doc, as_json, t)


def arena_side_run(a: Any, usage: Any, side: Any, n: int, value_size: int, delete: list[int]) -> dict[str, Any]:
    """Keys 0..n-1 with value_size-byte values in an arena hash table; then delete ``delete``."""
    alloc = PageFragAllocator(side)
    base = usage()
    h = ArenaHtab.create(side, alloc, max(64, n // 4))
    objs = {}
    for k in range(n):
        h.update(k, k)
        objs[k] = alloc.alloc(value_size) if value_size else 0
    full = usage() - base
    for k in delete:
        h.delete(k)
        alloc.free(objs.pop(k))
    after = usage() - base
    return {"bytes_per_element": (full / n) if n else 0.0, "peak_bytes": full, "after_delete_bytes": after,
            "pages_freed": alloc.pages_freed, "element_bytes": C.sizeof(HtabElem) + ((value_size + 7) & ~7)}


ARENA_MAX_BYTES = (1 << 20) * 4096         # max_entries 2^20 pages: the 4 GiB an arena can hold


@bench.command("arena-vs-htab")
@click.option("--elements", type=click.IntRange(1, 2_000_000), default=20_000, show_default=True,
              help="Key/value pairs stored in each structure.")
@click.option("--value-size", type=click.IntRange(0, 4000), default=64, show_default=True,
              help="Value size in bytes.")
@click.option("--delete-fraction", type=Finite(0, 1), default=0.5, show_default=True,
              help="Fraction of the elements deleted afterwards (0..1).")
@click.option("--backend", type=click.Choice(["model", "kernel", "both"]), default="model", show_default=True,
              help="Run on the model, on the running kernel (root, BPF), or both side by side.")
@click.option("--seed", type=click.IntRange(0, (1 << 63) - 1), default=0, show_default=True,
              help="Seed of the choice of deleted elements (and of the model).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@html_option
def bench_arena_vs_htab(elements: int, value_size: int, delete_fraction: float, backend: str, seed: int,
                        as_json: bool, html_path: str | None) -> None:
    """Same key/value set in a NO_PREALLOC hash map and in an arena hash table: bytes, peak, after deletes."""
    from ..backend.protocol import BPF_ANY, Invocation, MapSpec, Op
    need = elements * (C.sizeof(HtabElem) + ((value_size + 7) & ~7))
    if need > ARENA_MAX_BYTES * 0.9:        # page fragments waste a little: keep a margin
        fail("--elements", f"{elements:,} elements of {value_size} B need about {fmt_bytes(need)} of arena "
                           f"(nodes and values); an arena holds at most {fmt_bytes(ARENA_MAX_BYTES)}")
    rng = random.Random(seed)
    delete = sorted(rng.sample(range(elements), int(elements * delete_fraction)))
    keys = tuple(range(elements))
    rows = []
    backends = ["model", "kernel"] if backend == "both" else [backend]
    for be_name in backends:
        # (a) hash map on bpf_mem_alloc
        if be_name == "model":
            from ..backend.model import ModelBackend
            be: Any = ModelBackend(2, "v6.6", seed=seed)
        else:
            need_kernel()
            from ..kernel.backend import KernelBackend
            be = KernelBackend(1)
        try:
            m = be.map_create(MapSpec("hash", 4, max(value_size, 1), elements))
            c0 = be.sample(m).charged
            be.execute(m, (Invocation(0, (Op("update", keys, BPF_ANY),)),), "fill")
            full = be.sample(m).charged - c0
            peak = be.peak(m) - c0
            be.execute(m, (Invocation(0, (Op("delete", tuple(delete)),)),), "delete")
            after = be.sample(m).charged - c0
            be.idle(m, 1_000_000_000, "idle")
            idle = be.sample(m).charged - c0
            be.map_close(m)
        finally:
            if be_name == "kernel":
                be.close()
        rows.append({"structure": "htab (BPF_F_NO_PREALLOC)", "backend": be_name, "modelled": be_name == "model",
                     "bytes_per_element": full / elements, "peak_bytes": peak, "after_delete_bytes": after,
                     "after_idle_bytes": idle})
        # (b) arena hash table
        if be_name == "model":
            root = MemCgroup()
            cg = root.child("map")
            a: Any = BpfArena(1 << 20, BPF_F_MMAPABLE, memcg=cg, user=UserSpace(memcg=root))
            a.mmap(0, 1 << 32)
            # beside the kernel row the model takes the kernel row's path (user space builds the table, pages
            # come from user faults); alone it builds it on the BPF side (bpf_arena_alloc_pages)
            user_path = backend == "both"
            side = UserSide(a) if user_path else BpfSide(a)
            r = arena_side_run(a, lambda: cg.usage, side, elements, value_size, delete)
            r.update(structure="arena hash table (user space, page frags)" if user_path else
                     "arena hash table (bpf side, page frags)", backend="model", modelled=True)
            a.close()
        else:
            from ..kernel import syscall as S
            from ..kernel.arena import KernelArena, arena_create
            from ..kernel.cgroup import ChildMemcg, create_in, memcg_layout
            kcg = ChildMemcg(memcg_layout(), "arena")  # type: ignore[arg-type]
            try:
                fd = create_in(kcg, lambda: arena_create(1 << 20, BPF_F_MMAPABLE).release())
                ka = KernelArena(1 << 20, BPF_F_MMAPABLE, bmap=S.BpfMap(fd, 33, 0, 0, 1 << 20, BPF_F_MMAPABLE))
                ka.mmap()
                try:
                    r = arena_side_run(ka, kcg.usage, UserSide(ka), elements, value_size, delete)
                finally:
                    ka.close()
            finally:
                kcg.remove()
            r.update(structure="arena hash table (user space, page frags)", backend="kernel", modelled=False)
        r["after_idle_bytes"] = r["after_delete_bytes"]
        rows.append(r)
    doc = {"tool": "bpfmem", "version": __version__, "command": "bench arena-vs-htab",
           "params": {"elements": elements, "value_size": value_size, "delete_fraction": delete_fraction,
                      "seed": seed}, "results": rows,
           "notes": ["arena pages go back only when every object on them is freed (page-fragment allocator); "
                     "user space cannot free arena pages at all (munmap/MADV_DONTNEED keep them)",
                     "htab elements freed by delete stay parked on the allocator's lists (see bench htab-mem)"]}
    t = Table(title=f"arena vs htab: {plural(elements, 'element')}, value {value_size} B, delete {delete_fraction:.0%}")
    for c in ("structure", "backend", "bytes/element", "peak", "after delete", "after 1 s idle"):
        t.add_column(c, justify="left" if c in ("structure", "backend") else "right")
    for r in rows:
        t.add_row(r["structure"], r["backend"] + ("" if not r["modelled"] else " (modelled)"),
                  f"{r['bytes_per_element']:.1f}", fmt_bytes(r["peak_bytes"]), fmt_bytes(r["after_delete_bytes"]),
                  fmt_bytes(r["after_idle_bytes"]))
    write_html(doc, html_path, not as_json)
    emit(doc, as_json, t)
    if not as_json:
        for n in doc["notes"]:
            Console().print(f"[dim]{n}[/dim]")

