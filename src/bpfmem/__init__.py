"""bpfmem: the Linux kernel's BPF memory management as a model you can run and check against the kernel."""

__version__ = "0.1.0"
