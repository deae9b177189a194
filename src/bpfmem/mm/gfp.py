"""GFP flags as the BPF memory code passes them (include/linux/gfp_types.h).

Only what changes behaviour in the model: whether an allocation may reclaim
(``__GFP_DIRECT_RECLAIM``, part of GFP_KERNEL, absent from GFP_NOWAIT) and
whether it is charged to a memcg (``__GFP_ACCOUNT``).
"""

from __future__ import annotations

__GFP_DIRECT_RECLAIM = 0x400
__GFP_KSWAPD_RECLAIM = 0x800
__GFP_ZERO = 0x100
__GFP_NOWARN = 0x2000
__GFP_NORETRY = 0x10000
__GFP_ACCOUNT = 0x400000
__GFP_HIGH = 0x20

GFP_NOWAIT = __GFP_KSWAPD_RECLAIM
GFP_ATOMIC = __GFP_HIGH | __GFP_KSWAPD_RECLAIM
GFP_KERNEL = __GFP_DIRECT_RECLAIM | __GFP_KSWAPD_RECLAIM
GFP_USER = GFP_KERNEL


def gfpflags_allow_blocking(gfp: int) -> bool:
    return bool(gfp & __GFP_DIRECT_RECLAIM)
