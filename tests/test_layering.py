"""The architecture's import rules, checked on every module's imports (ast)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "bpfmem"

# package -> bpfmem packages it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "sim": set(),
    "rcu": {"sim"},
    "mm": {"sim"},
    "alloc": {"sim", "rcu", "mm"},
    "maps": {"sim", "rcu", "mm", "alloc"},
    "arena": {"sim", "rcu", "mm", "alloc"},
    "workloads": {"backend.protocol"},
    "report": set(),
    "userspace": set(),
    "check": {"sim"},
    "explore": {"*"},
    "sweep": {"*"},            # runs bpfmem commands (cli) and writes reports
    "bench": {"workloads", "backend.protocol", "report"},
    "backend.protocol": set(),
    "backend.model": {"sim", "rcu", "mm", "alloc", "maps", "backend.protocol", "backend.costs", "backend.memo"},
    "backend.memo": {"sim", "rcu", "mm", "alloc", "maps", "backend.protocol", "backend.model"},  # types only
    "backend.footprint": set(),
    "backend.speed": {"backend.model", "backend.profile", "maps", "workloads"},
    "backend.costs": set(),
    "backend.local_storage": {"sim", "rcu", "mm", "maps", "backend.profile"},
    "backend.profile": {"rcu", "backend.costs"},
    "kernel": {"backend.protocol", "workloads", "report"},
    "reproduce": {"backend.model", "backend.profile", "maps", "workloads", "bench"},
    "whatif": {"sim", "rcu", "mm", "alloc", "maps", "backend.profile", "backend.model", "bench", "workloads"},
    "sizing": {"backend.model", "backend.profile", "backend.protocol", "maps", "mm", "kernel"},
    "backend": {"backend.protocol"},
    "cli": {"*"},
    "": {"*"},
}


def unit_of(path: Path, src: Path = SRC) -> str:
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    if not parts:
        return ""
    if parts[0] == "backend" and len(parts) > 1:
        return f"backend.{parts[1]}"
    if len(parts) == 1 and (src / f"{parts[0]}.py").exists():
        return ""
    return parts[0]


def imported_units(path: Path, src: Path = SRC) -> set[str]:
    tree = ast.parse(path.read_text())
    pkg = list(path.relative_to(src).parent.parts)
    out: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                mod = base + (node.module.split(".") if node.module else [])
                names = [".".join(mod)] if node.module else [".".join(base + [a.name]) for a in node.names]
            elif node.module and node.module.startswith("bpfmem"):
                names = [node.module[len("bpfmem."):]]
        elif isinstance(node, ast.Import):
            names = [a.name[len("bpfmem."):] for a in node.names if a.name.startswith("bpfmem.")]
        for n in names:
            parts = n.split(".")
            if parts[0] == "backend" and len(parts) > 1:
                out.add(f"backend.{parts[1]}")
            elif parts and parts[0]:
                out.add(parts[0])
    return out


def violations(src: Path) -> list[str]:
    bad = []
    for f in sorted(src.rglob("*.py")):
        unit = unit_of(f, src)
        allowed = ALLOWED.get(unit)
        if allowed is None:
            bad.append(f"{f}: package {unit!r} has no layering rule")
            continue
        if "*" in allowed:
            continue
        for dep in imported_units(f, src):
            if dep == unit or dep in allowed or dep in ("", "bpfmem") or dep.startswith("_"):
                continue
            bad.append(f"{f.relative_to(src)}: {unit or '<root>'} imports {dep}")
    return bad


def test_every_module_respects_the_layers() -> None:
    """sim knows nothing of memory; workloads see only backend.protocol; the model never imports kernel."""
    assert len(list(SRC.rglob("*.py"))) > 20
    bad = violations(SRC)
    assert not bad, "\n".join(bad)


def test_checker_reports_a_forbidden_edge(tmp_path: Path) -> None:
    """The checker can fail: an engine module importing the allocator, or a workload importing the model."""
    root = tmp_path / "bpfmem"
    for pkg in ("sim", "alloc", "workloads", "backend"):
        (root / pkg).mkdir(parents=True)
        (root / pkg / "__init__.py").write_text("")
    (root / "sim" / "bad.py").write_text("from ..alloc import unit_alloc\n")
    (root / "workloads" / "bad.py").write_text("from ..backend.model import ModelBackend\n")
    (root / "workloads" / "good.py").write_text("from ..backend.protocol import Op\n")
    bad = violations(root)
    assert any("sim imports alloc" in b for b in bad)
    assert any("workloads imports backend.model" in b for b in bad)
    assert not any("good.py" in b for b in bad)
