"""The checker: shadow state per object and named violations (an instrument; it never drives a run)."""

from .shadow import KINDS, Checker, Violation

__all__ = ["KINDS", "Checker", "Violation"]
