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


def _gp(d: dict[str, Any], base: GpModel, what: str) -> GpModel:
    try:
        return GpModel(gp_min_ns=int(float(d.get("gp_min_ms", base.gp_min_ns / MS)) * MS),
                       gp_max_ns=int(float(d.get("gp_max_ms", base.gp_max_ns / MS)) * MS),
                       lazy_delay_ns=int(float(d.get("lazy_ms", base.lazy_delay_ns / MS)) * MS),
                       lazy_lim=int(d.get("lazy_lim", base.lazy_lim)),
                       gp_sleep_ns=int(float(d.get("gp_sleep_ms", base.gp_sleep_ns / MS)) * MS),
                       urgent_qs_ns=int(float(d.get("urgent_qs_ms", base.urgent_qs_ns / MS)) * MS))
    except (TypeError, ValueError) as e:
        raise ProfileError(f"{what}: {e}") from None


def profile_from_dict(d: dict[str, Any], name: str) -> Profile:
    known = {f.name for f in fields(CostModel)}
    costs_d = d.get("costs", {})
    unknown = set(costs_d) - known
    if unknown:
        raise ProfileError(f"costs: unknown field(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(known))}")
    try:
        costs = CostModel(**{k: (v if k == "source" else type(getattr(CostModel(), k))(v))
                             for k, v in costs_d.items()})
    except (TypeError, ValueError) as e:
        raise ProfileError(f"costs: {e}") from None
    return Profile(name, str(d.get("source", "unknown")), costs,
                   _gp(d.get("tasks_trace", {}), TASKS_TRACE_DEFAULT, "tasks_trace"),
                   _gp(d.get("rcu", {}), RCU_DEFAULT, "rcu"))


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
