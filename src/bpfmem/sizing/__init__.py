"""Before deploying: what a map will cost, which cgroup pays, and what happens at a memcg limit."""

from .size import SizeQuery, check_limit, fit_model, size_kernel, size_model

__all__ = ["SizeQuery", "check_limit", "fit_model", "size_kernel", "size_model"]
