"""The bpfmem command line."""

from .main import cli, entry, main
from . import kernel_cmds  # noqa: F401  (registers kernel probe, compare, calibrate)

__all__ = ["cli", "entry", "main"]
