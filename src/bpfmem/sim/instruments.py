"""Instruments: typed events out of the model at no cost when nobody listens.

Problem: the checker, tracers and statistics collectors all want to see what
the model does, but the bulk benchmark path must not pay for observers that
are not there.  As in trio's ``Instruments``, hooks are dispatched per name and
a mechanism tests one boolean (``instruments.active``) before building any
event arguments.

Hook names (an instrument implements any subset as methods)::

    obj_alloc(cpu, cache, obj)     obj_free(cpu, cache, obj, kind)
    kmalloc(obj)                   kfree(obj)
    irq_work_raise(cpu, work)      irq_work_run(cpu, work)
    gp_start(flavour, seq)         gp_end(flavour, seq)
    memcg_charge(memcg, nbytes)    memcg_uncharge(memcg, nbytes)
    point(cpu, label)
"""

from __future__ import annotations

from typing import Any, Callable

HOOKS: tuple[str, ...] = (
    "obj_alloc",
    "obj_free",
    "kmalloc",
    "kfree",
    "irq_work_raise",
    "irq_work_run",
    "gp_start",
    "gp_end",
    "memcg_charge",
    "memcg_uncharge",
    "point",
)


class Instruments:
    """Per-hook dispatcher; ``active`` is False while no instrument is installed."""

    def __init__(self) -> None:
        self._hooks: dict[str, list[Callable[..., Any]]] = {}
        self._installed: list[object] = []
        self.active = False

    def add(self, instrument: object) -> None:
        hooks = [h for h in HOOKS if callable(getattr(instrument, h, None))]
        if not hooks:
            raise TypeError(f"{instrument!r} implements none of the hooks {HOOKS}")
        self._installed.append(instrument)
        for h in hooks:
            self._hooks.setdefault(h, []).append(getattr(instrument, h))
        self.active = True

    def remove(self, instrument: object) -> None:
        self._installed.remove(instrument)
        for h in HOOKS:
            fn = getattr(instrument, h, None)
            if fn is not None and h in self._hooks:
                self._hooks[h] = [f for f in self._hooks[h] if f != fn]
                if not self._hooks[h]:
                    del self._hooks[h]
        self.active = bool(self._installed)

    def emit(self, hook: str, *args: Any) -> None:
        for fn in self._hooks.get(hook, ()):
            fn(*args)
