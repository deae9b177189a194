"""User-space (and BPF-side) access to arenas, independent of which arena is behind them."""
