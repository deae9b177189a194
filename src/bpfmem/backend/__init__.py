"""Backends: the protocol workloads see, and the model behind it."""

from .protocol import Backend, Invocation, MapSpec, MemorySample, Op, Producer, RunCounts

__all__ = ["Backend", "Invocation", "MapSpec", "MemorySample", "Op", "Producer", "RunCounts"]
