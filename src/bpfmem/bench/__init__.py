"""Benchmarks: run workloads on a backend and report like the kernel's bench."""

from .htab_mem import HtabMemResult, run_htab_mem

__all__ = ["HtabMemResult", "run_htab_mem"]
