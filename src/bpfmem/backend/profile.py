"""Model profiles: the data (operation costs, grace-period latencies) a model run uses.

A profile is a JSON file written by ``bpfmem calibrate`` from runs on a real
kernel, or shipped with bpfmem.  ``load_profile(None)`` gives the shipped
default, measured on the reference machine kind (2-CPU VM, Linux 6.18); the
profile's ``source`` says where its numbers come from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from importlib import resources
from typing import Any

from ..rcu import RCU_DEFAULT, TASKS_TRACE_DEFAULT, GpModel
from .costs import CostModel

MS = 1_000_000
DEFAULT_PROFILE = "reference-6.18-2cpu.json"


class ProfileError(ValueError):
    """A profile file that cannot be used (names the field)."""


@dataclass(frozen=True)
class Profile:
    name: str
    source: str
    costs: CostModel
    tasks_trace: GpModel
    rcu: GpModel

    def describe(self) -> dict[str, Any]:
        return {"profile": self.name, "source": self.source}


GP_KEYS = {"tasks_trace": ("lazy_ms", "gp_min_ms", "gp_max_ms", "lazy_lim", "gp_sleep_ms"),
           "rcu": ("gp_min_ms", "gp_max_ms")}
GP_OPTIONAL = ("urgent_qs_ms",)
TOP_KEYS = ("source", "costs", "tasks_trace", "rcu")
TOP_OPTIONAL = ("measured",)
# costs added after profiles were written: a profile without them takes the built-in estimate
COST_OPTIONAL = ("lock_ns",)


def _check_keys(d: Any, what: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> list[str]:
    """Problems with the keys of ``d``: not an object, missing keys, unknown keys (each named)."""
    if not isinstance(d, dict):
        return [f"{what} must be a JSON object, got {type(d).__name__}"]
    out = []
    missing = [k for k in required if k not in d]
    unknown = sorted(set(d) - set(required) - set(optional))
    if missing:
        out.append(f"{what}: missing {', '.join(missing)}")
    if unknown:
        out.append(f"{what}: unknown {', '.join(unknown)} (allowed: {', '.join((*required, *optional))})")
    return out


def _gp(d: dict[str, Any], base: GpModel, what: str) -> GpModel:
    try:
        return GpModel(gp_min_ns=int(float(d.get("gp_min_ms", base.gp_min_ns / MS)) * MS),
                       gp_max_ns=int(float(d.get("gp_max_ms", base.gp_max_ns / MS)) * MS),
                       lazy_delay_ns=int(float(d.get("lazy_ms", base.lazy_delay_ns / MS)) * MS),
                       lazy_lim=int(d.get("lazy_lim", base.lazy_lim)),
                       gp_sleep_ns=int(float(d.get("gp_sleep_ms", base.gp_sleep_ns / MS)) * MS),
                       urgent_qs_ns=int(float(d.get("urgent_qs_ms", base.urgent_qs_ns / MS)) * MS))
    except (TypeError, ValueError, OverflowError) as e:
        raise ProfileError(f"{what}: {e}") from None


def profile_from_dict(d: dict[str, Any], name: str) -> Profile:
    """A profile from its JSON object; every missing or unknown key is named (``ProfileError``)."""
    problems = _check_keys(d, name, TOP_KEYS, TOP_OPTIONAL)
    cost_keys = tuple(f.name for f in fields(CostModel) if f.name not in COST_OPTIONAL)
    if isinstance(d, dict):
        if "costs" in d:
            problems += _check_keys(d["costs"], "costs", cost_keys, COST_OPTIONAL)
        for k, keys in GP_KEYS.items():
            if k in d:
                problems += _check_keys(d[k], k, keys, GP_OPTIONAL)
    if problems:
        raise ProfileError("; ".join(problems))
    costs_d = d["costs"]
    try:
        costs = CostModel(**{k: (str(v) if k == "source" else _number(v, type(getattr(CostModel(), k)), k))
                             for k, v in costs_d.items()})
    except (TypeError, ValueError) as e:
        raise ProfileError(f"costs: {e}") from None
    return Profile(name, str(d["source"]), costs,
                   _gp(d["tasks_trace"], TASKS_TRACE_DEFAULT, "tasks_trace"), _gp(d["rcu"], RCU_DEFAULT, "rcu"))


def _number(v: Any, kind: type, what: str) -> Any:
    import math
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number, got {v!r}")
    return kind(v)


def load_profile(path: str | None) -> Profile:
    """The profile in ``path``, or the shipped default when None."""
    if path is None:
        text = resources.files("bpfmem.backend").joinpath("profiles", DEFAULT_PROFILE).read_text()
        name = DEFAULT_PROFILE
    else:
        try:
            with open(path) as f:
                text = f.read()
        except OSError as e:
            raise ProfileError(f"cannot read {path}: {e.strerror}") from None
        name = path
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProfileError(f"{name} is not JSON: {e}") from None
    if not isinstance(d, dict):
        raise ProfileError(f"{name}: a profile is a JSON object")
    return profile_from_dict(d, name)
