"""The real kernel: bpf(2) through ctypes, memory cgroups, probing, and a Backend on top."""

DRIVERS: tuple[str, ...] = ("syscall", "prog")
