"""``bpfmem reproduce``: the published tables of the allocator debate, run on the model beside the numbers."""

from .run import compare_table, fit_machine, plan, reproduce, run_cell
from .tables import MACHINE, PENDING, TABLES, Flavour, PublishedTable

__all__ = ["compare_table", "fit_machine", "plan", "reproduce", "run_cell", "MACHINE", "PENDING", "TABLES", "Flavour",
           "PublishedTable"]
