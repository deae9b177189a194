"""The seed's open questions, answered with numbers: the kernel beside each proposal (``bpfmem whatif``)."""

from .proposals import PROPOSALS, Drain, Hotplug, parse_policy
from .questions import QUESTIONS, WhatIfConfig, run_whatif

__all__ = ["PROPOSALS", "Drain", "Hotplug", "parse_policy", "QUESTIONS", "WhatIfConfig", "run_whatif"]
