"""The bpfmem command line."""

from .main import cli, entry, main

__all__ = ["cli", "entry", "main"]
