"""Backend-agnostic workload definitions (they see only ``backend.protocol``)."""

from .htab_mem import OP_BATCH, USE_CASES, HtabMemConfig, HtabMemWorkload, WorkloadError, htab_mem

__all__ = ["OP_BATCH", "USE_CASES", "HtabMemConfig", "HtabMemWorkload", "WorkloadError", "htab_mem"]
