"""The BPF arena model: sparse shared memory with real bytes, the range tree, pointer casts."""

from .arena import (BPF_F_MMAPABLE, BPF_F_NO_USER_CONV, BPF_F_SEGV_ON_FAULT, MAP_FIXED, MAP_FIXED_NOREPLACE,
                    MAP_PRIVATE, MAP_SHARED, ArenaError, ArenaFault, BpfArena, UserSpace)
from .range_tree import RangeTree

__all__ = ["BPF_F_MMAPABLE", "BPF_F_NO_USER_CONV", "BPF_F_SEGV_ON_FAULT", "MAP_FIXED", "MAP_FIXED_NOREPLACE",
           "MAP_PRIVATE", "MAP_SHARED", "ArenaError", "ArenaFault", "BpfArena", "UserSpace", "RangeTree"]
