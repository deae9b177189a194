"""The bpfmem command line."""

from .main import cli, entry, main
from . import arena_cmds, explore_cmds, kernel_cmds  # noqa: F401  (register their commands)

__all__ = ["cli", "entry", "main"]
