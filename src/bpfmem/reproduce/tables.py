"""The published tables bpfmem reproduces, as data (docs/reproduce.md; sources in
shared reference published-numbers.md, Part B, with the lore message id of each).

A table names its benchmark variant (the merged ``bench htab-mem`` of 6.6, or the RFC variant the
allocator RFCs measured with), the machine (8-CPU KVM guests), the flavours (each a bpfmem policy of
that era) and, per flavour and use case, the published (speed, average MiB, peak MiB).
"""

from __future__ import annotations

from dataclasses import dataclass, field

Cell = tuple[float | None, float | None, float | None]   # speed, average MiB, peak MiB (None: not published)


@dataclass(frozen=True)
class Flavour:
    label: str                  # as the source names it
    policy: str                 # the bpfmem policy that models it
    lazy_tasks_trace: bool = False   # all these kernels predate lazy call_rcu_tasks_trace (6.6)


@dataclass(frozen=True)
class PublishedTable:
    name: str
    title: str
    source: str                 # lore message id of the mail with the numbers
    variant: str                # "merged" (OP_BATCH 64, per-prod-op k/s) or "rfc" (--full 50, loop k/s total)
    cpus: int
    measured_s: float           # the published run's measurement time (-d)
    speed_unit: str
    flavours: tuple[Flavour, ...]
    use_cases: tuple[str, ...]
    cells: dict[tuple[str, str], Cell] = field(repr=False)
    command: str = ""
    notes: str = ""
    key_size: int = 4
    value_size: int = 8
    # a table without preallocated rows: the flavour whose published speed anchors the speed factor (that
    # cell is then fitted, not checked); "" with no preallocated row: no floor, no factor
    anchor: str = ""
    # the published runs' length is part of the number (a peak that grows for the whole run): run it whole
    full_length: bool = False


USE_CASES = ("overwrite", "batch_add_batch_del", "add_del_on_diff_cpu")

B5 = PublishedTable(
    "B.5", "RFC v3: six flavours of element freeing (Hou Tao, 2023-04-29)",
    "20230429101215.111262-7-houtao@huaweicloud.com", "rfc", 8, 9.0, "loop k/s (total over 8 producers)",
    (Flavour("(1) kmalloc() + call_rcu (v6.0.19)", "kmalloc_rcu"),
     Flavour("(2) preallocated", "prealloc"),
     Flavour("(3) normal bpf ma (immediate reuse)", "v6.4"),
     Flavour("(4) reuse-after-rcu-gp", "reuse_after_gp"),
     Flavour("(5) free-after-rcu-gp", "free_after_gp"),
     Flavour("(6) extra call_rcu + bpf ma", "delayed_free")),
    USE_CASES,
    {("kmalloc_rcu", "overwrite"): (3.21, 40.47, 67.98), ("kmalloc_rcu", "batch_add_batch_del"): (2.32, 24.31, 49.33),
     ("kmalloc_rcu", "add_del_on_diff_cpu"): (2.92, 4.03, 6.00),
     ("prealloc", "overwrite"): (36.19, 1.88, 1.88), ("prealloc", "batch_add_batch_del"): (22.27, 1.88, 1.88),
     ("prealloc", "add_del_on_diff_cpu"): (4.68, 1.95, 2.05),
     ("v6.4", "overwrite"): (26.57, 2.59, 2.74), ("v6.4", "batch_add_batch_del"): (11.13, 2.59, 2.99),
     ("v6.4", "add_del_on_diff_cpu"): (3.72, 15.15, 26.04),
     ("reuse_after_gp", "overwrite"): (16.37, 24.01, 31.76), ("reuse_after_gp", "batch_add_batch_del"): (9.61, 16.71, 19.95),
     ("reuse_after_gp", "add_del_on_diff_cpu"): (3.62, 22.93, 37.02),
     ("free_after_gp", "overwrite"): (11.02, 13.48, 21.85), ("free_after_gp", "batch_add_batch_del"): (7.43, 10.58, 16.14),
     ("free_after_gp", "add_del_on_diff_cpu"): (3.15, 6.36, 9.65),
     ("delayed_free", "overwrite"): (12.57, 372.01, 676.56), ("delayed_free", "batch_add_batch_del"): (9.31, 276.14, 431.04),
     ("delayed_free", "add_del_on_diff_cpu"): (3.29, 18.73, 35.13)},
    command="./bench htab-mem --use-case $name --max-entries 16384 ${OPTS} --full 50 -d 9 --producers=8 "
            "--prod-affinity=0-7",
    notes="KVM guest, 8 CPUs, 16 GB; no_op rows (1214-1277 k/s, 0.92-0.99 MiB) are the bench's own floor")

B8 = PublishedTable(
    "B.8", "the merged htab-mem benchmark (fd283ab196a8) and the free_rcu hack (Hou Tao, 2023-07-04)",
    "20230704025039.938914-1-houtao@huaweicloud.com", "merged", 8, 10.0, "per-prod-op k/s",
    (Flavour("(1) kmalloc() + call_rcu (v6.0.19)", "kmalloc_rcu"),
     Flavour("(2) preallocated", "prealloc"),
     Flavour("(3) normal bpf memory allocator", "v6.4"),
     Flavour("htab with bpf_mem_cache_free_rcu() (v9 notes)", "free_rcu")),
    USE_CASES,
    {("kmalloc_rcu", "overwrite"): (11.24, 82.64, 119.18), ("kmalloc_rcu", "batch_add_batch_del"): (18.45, 50.47, 94.96),
     ("kmalloc_rcu", "add_del_on_diff_cpu"): (14.50, 4.64, 7.20),
     ("prealloc", "overwrite"): (191.42, 1.24, 1.49), ("prealloc", "batch_add_batch_del"): (221.83, 1.23, 1.49),
     ("prealloc", "add_del_on_diff_cpu"): (39.66, 1.47, 1.75),
     ("v6.4", "overwrite"): (126.59, 2.26, 2.74), ("v6.4", "batch_add_batch_del"): (83.37, 2.14, 2.74),
     ("v6.4", "add_del_on_diff_cpu"): (21.25, 17.50, 28.87),
     ("free_rcu", "overwrite"): (69.37, 137.00, 201.45), ("free_rcu", "batch_add_batch_del"): (76.26, 45.88, 56.27),
     ("free_rcu", "add_del_on_diff_cpu"): (30.58, 20.06, 28.54)},
    command="./bench htab-mem --use-case $name ${OPTS} -w3 -d10 -a -p8",
    notes="KVM guest, 8 CPUs, 16 GB; free_rcu: Alexei Starovoitov's bpf_mem_cache_free_rcu v3 series on a "
          "6.5-era kernel (tasks-trace RCU not yet lazy)")

B6 = PublishedTable(
    "B.6", "RFC v4: reuse after one RCU GP from one list per allocator (Hou Tao, 2023-06-06)",
    "20230606035310.4026145-4-houtao@huaweicloud.com", "rfc", 8, 10.0, "loop k/s (total over 8 producers)",
    (Flavour("before (immediate reuse)", "v6.4"), Flavour("after (reuse-after-RCU-GP)", "reuse_after_gp_global")),
    USE_CASES,
    {("v6.4", "overwrite"): (28.52, 2.46, 2.73), ("v6.4", "batch_add_batch_del"): (11.50, 2.69, 2.95),
     ("v6.4", "add_del_on_diff_cpu"): (3.75, 15.85, 24.24),
     ("reuse_after_gp_global", "overwrite"): (11.00, 2288.0, 4109.0),
     ("reuse_after_gp_global", "batch_add_batch_del"): (8.86, 1558.0, 2763.0),
     ("reuse_after_gp_global", "add_del_on_diff_cpu"): (4.74, 11.39, 14.77)},
    command="./bench htab-mem --use-case $name --max-entries 16384 --full 50 -d 10 --producers=8 --prod-affinity=0-7",
    notes="KVM VM, 8 CPUs, 16 GB; the author saw reuse_rcu() run ~100 ms to 2 s after its call_rcu()")

B7 = PublishedTable(
    "B.7", "RFC v5 1/2: per-CPU reuse lists, RCU callbacks unbounded (Hou Tao, 2023-06-19)",
    "20230619143231.222536-2-houtao@huaweicloud.com", "merged", 8, 10.0, "per-prod-op k/s",
    (Flavour("before (immediate reuse)", "v6.4"), Flavour("after 1/2 (reuse-after-RCU-GP)", "reuse_after_gp_pcpu")),
    USE_CASES,
    {("v6.4", "overwrite"): (115.90, 2.14, 2.73), ("v6.4", "batch_add_batch_del"): (113.40, 2.32, 2.75),
     ("v6.4", "add_del_on_diff_cpu"): (18.43, 18.17, 31.20),
     ("reuse_after_gp_pcpu", "overwrite"): (49.11, 313.09, 509.09),
     ("reuse_after_gp_pcpu", "batch_add_batch_del"): (76.06, 287.97, 496.81),
     ("reuse_after_gp_pcpu", "add_del_on_diff_cpu"): (18.75, 27.71, 44.54)},
    command="./bench htab-mem --use-case $name -w 3 -d 10 -a -p 8",
    notes="KVM VM, 8 CPUs, 16 GB; the 2/2 row (rcu_momentary_dyntick_idle every >= 10 ms) is not modelled")

B4 = PublishedTable(
    "B.4", "RFC v2: reuse-after-RCU-GP and free-after-RCU-GP against kmalloc and immediate reuse (Hou Tao, 2023-04-08)",
    "20230408141846.1878768-5-houtao@huaweicloud.com", "rfc_v2", 8, 7.0, "loop k/s (total over 8 producers)",
    (Flavour("(1) no bpf ma (v6.0.19; kmalloc() + call_rcu)", "kmalloc_rcu"),
     Flavour("preallocated (1/4)", "prealloc"),
     Flavour("(2) normal bpf ma", "v6.2"),
     Flavour("(3) reuse-after-rcu-gp", "reuse_after_gp"),
     Flavour("(4) free-after-rcu-gp (call_rcu in batch, then slab)", "free_after_gp")),
    USE_CASES,
    {("kmalloc_rcu", "overwrite"): (3.74, 32.52, 84.18), ("kmalloc_rcu", "batch_add_batch_del"): (2.23, 26.38, 48.75),
     ("kmalloc_rcu", "add_del_on_diff_cpu"): (3.92, 33.72, 48.96),
     ("prealloc", "overwrite"): (34.02, 1.96, 2.00), ("prealloc", "batch_add_batch_del"): (19.25, 1.96, 2.00),
     ("prealloc", "add_del_on_diff_cpu"): (8.70, 1.96, 2.00),
     ("v6.2", "overwrite"): (27.12, 2.5, 2.99), ("v6.2", "batch_add_batch_del"): (8.9, 2.77, 3.24),
     ("v6.2", "add_del_on_diff_cpu"): (11.30, 218.54, 440.37),
     ("reuse_after_gp", "overwrite"): (15.66, 25.00, 33.07),
     ("reuse_after_gp", "batch_add_batch_del"): (10.32, 18.84, 22.64),
     ("reuse_after_gp", "add_del_on_diff_cpu"): (13.00, 550.50, 748.74),
     ("free_after_gp", "overwrite"): (10.73, 12.33, 20.32), ("free_after_gp", "batch_add_batch_del"): (7.02, 9.45, 14.07),
     ("free_after_gp", "add_del_on_diff_cpu"): (8.99, 131.64, 204.42)},
    command="./bench htab-mem --use-case $name --max-entries 16384 --full 50 -d 7 -w 3 --producers=8 "
            "--prod-affinity=0-7",
    notes="KVM guest, 8 CPUs (assumed the same as 1/4's); the RFC v2 benchmark: add_del_on_diff_cpu adder and "
          "deleter unsynchronised, an array lookup before each update (not modelled: in the speed factor); the "
          "preallocated row is 1/4's (20230408141846.1878768-2), the rest 4/4's. Free-after-rcu-gp: 'bpf_mem_free() "
          "... will do call_rcu() in batch to free these elements back to slab' (Hou Tao's reply on 4/4), as in RFC v3")

B2 = PublishedTable(
    "B.2", "Misc optimizations for bpf mem allocator: the htab-update blow-up (Hou Tao, 2022-12-06)",
    "20221206042946.686847-1-houtao@huaweicloud.com", "htab_update", 16, 13.0, "-",
    (Flavour("before: bpf_mem_alloc of 6.1", "v6.1"),
     Flavour("after: refill reuses free_by_rcu (0893d6007db5)", "v6.2")),
    ("batch_add_batch_del",),
    {("v6.1", "batch_add_batch_del"): (None, None, 14 * 1024.0),
     ("v6.2", "batch_add_batch_del"): (None, None, 26.0)},
    command="./bench -w3 -d10 -a htab-update -p 16",
    notes="only peak memory is published ('14GB or more' before, 26MB after); machine not stated; the "
          "middle number (860MB with a larger rcupdate.rcu_task_enqueue_lim: per-CPU callback queues invoking "
          "in parallel) needs tasks-trace callback invocation cost, which the model does not have; "
          "htab-update (qp-trie series bench): 16384 random keys of 255 B, value 4 B, each CPU adds its "
          "1024 keys then deletes them per run (batch_add_batch_del with batch 1024); no floor, no factor",
    key_size=255, value_size=4, full_length=True)

B3 = PublishedTable(
    "B.3", "RFC v1: BPF_MA_NO_REUSE and map_perf_test (Hou Tao, 2022-12-30)",
    "20221230041151.1231169-1-houtao@huaweicloud.com", "map_perf", 18, 1.0, "K events/s per CPU",
    (Flavour("normal bpf ma (6.2-rc)", "v6.2"), Flavour("no reuse (RFC v1)", "no_reuse")),
    ("hash_map_perf_kmalloc",),
    {("v6.2", "hash_map_perf_kmalloc"): (520.0, None, None),
     ("no_reuse", "hash_map_perf_kmalloc"): (330.0, None, None)},
    command="./map_perf_test 4 18 8192",
    notes="speed only; each event (getgid() under a kprobe) does 10 x (update key=pid, lookup, delete) on a "
          "BPF_F_NO_PREALLOC hash of 8192 entries, one process per CPU; no preallocated row: the speed factor "
          "is anchored on the normal-bpf-ma cell, so only the no-reuse cell is a check",
    anchor="v6.2")

TABLES: dict[str, PublishedTable] = {t.name: t for t in (B2, B3, B4, B5, B6, B7, B8)}
# the machine the tables were measured on: its memory floor and speed factor are fitted once from the
# preallocated rows of its tables (the bench process's own charge; the guest's speed against the profile's)
MACHINE = "8-CPU KVM guest, 16 GB (Hou Tao's RFC and htab-mem measurements, 2023)"
# published tables not reproduced yet, and what they need
PENDING: dict[str, str] = {}
