"""The bpfmem command line."""

from .main import cli, entry, main
from . import arena_cmds, calibrate_cmd, explore_cmds, kernel_cmds  # noqa: F401  (register their commands)
from . import plot_cmds  # noqa: F401  (registers bpfmem plot)
from . import reproduce_cmd  # noqa: F401  (registers bpfmem reproduce)
from . import local_storage_cmd, memcg_cmd, size_cmd, sweep_cmd, whatif_cmd  # noqa: F401  (register their commands)

__all__ = ["cli", "entry", "main"]
