"""Task local storage on ``bpf_mem_alloc`` (6.4-6.18): what ``reuse_now`` promises, and the seed's worry.

Two free paths (08a7ce384e33): delete (``bpf_task_storage_delete`` or the syscall, ``reuse_now = false``)
waits for a tasks-trace grace period and frees to slab without reuse; destroy (the task is freed,
``reuse_now = true``) hands the element back for immediate reuse, because the task already went
through an RCU grace period after it became unreachable.

- ``local_storage_delete``: a sleepable program (an RCU Tasks Trace reader, no RCU read section) holds
  a task's element across a sleep while user space deletes it and creates elements for other tasks.
  The kernel's tasks-trace GP protects it (policy ``ttrace_raw_free``).  ``free_after_gp`` is the
  seed's ``BPF_MA_FREE_AFTER_GP`` applied to local storage (slab after a normal RCU GP): it "may
  break existing sleep-able programs" — a use after free.  ``free`` frees on delete as destroy does (``bpf_mem_cache_free``, reusable at
  once): the program reads another task's element.
- ``local_storage_destroy``: a normal program (RCU reader) finds a task through an RCU-protected pointer
  and reads its element while the task exits (unhashed, then destroyed one RCU GP later) and other
  tasks' elements are created: the grace period covers the reader, so immediate reuse is safe.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ...maps.local_storage import PROFILES, Owner
from ..runtime import Env, Run, Thread
from . import Scenario

E = frozenset
OTHERS = 3          # elements created for other tasks after the free: enough to reuse a freed element


def _profile(policy: str, planted: bool) -> Any:
    waits = {"ttrace_raw_free": "tasks_trace", "free_after_gp": "rcu", "free": "now"}[policy]
    if planted:
        waits = "rcu"            # planted: delete's tasks-trace callback waits for a normal RCU GP instead
    return replace(PROFILES["v6.8"], name=f"v6.8:{waits}", delete_waits=waits)


def setup_delete(run: Run, policy: str, planted: bool) -> None:
    env = run.env
    smap = env.new_local_storage("task_storage", "task", _profile(policy, planted))
    victim = Owner("task", "task1")
    others = [Owner("task", f"task{i}") for i in range(2, 2 + OTHERS)]
    boot = Thread("boot", 1, lambda e, t: None)
    env.bpf_storage_get(boot, smap, victim, create_value=100)

    def reader(env: Env, t: Thread) -> Any:
        ref = env.bpf_storage_get(t, smap, victim)
        if ref is None:
            return None
        env.sleep_until_done(t, "writer")            # e.g. a faulting bpf_copy_from_user() while holding it
        return env.READ_ONCE(t, ref, "value")

    def writer(env: Env, t: Thread) -> Any:
        env.bpf_storage_delete(t, smap, victim)
        for i, o in enumerate(others):
            env.bpf_storage_get(t, smap, o, create_value=200 + i)

    run.spawn("reader", 0, reader, rcu=False, trace=True)
    run.spawn("writer", 1, writer, rcu=False)


def setup_destroy(run: Run, policy: str, planted: bool) -> None:
    env = run.env
    smap = env.new_local_storage("task_storage", "task", _profile(policy, False))
    victim = Owner("task", "task1")
    others = [Owner("task", f"task{i}") for i in range(2, 2 + OTHERS)]
    slot = env.static("task_ptr")
    boot = Thread("boot", 1, lambda e, t: None)
    env.bpf_storage_get(boot, smap, victim, create_value=100)
    env.WRITE_ONCE(boot, slot, "p", victim)

    def reader(env: Env, t: Thread) -> Any:
        owner = env.rcu_dereference(t, slot, "p")
        if not owner:
            return None
        ref = env.bpf_storage_get(t, smap, owner)
        if ref is None:
            return None
        if planted:
            env.rcu_read_unlock(t)                   # planted: keeps reading after its RCU section ended
        return env.READ_ONCE(t, ref, "value"), env.READ_ONCE(t, ref, "value")

    def writer(env: Env, t: Thread) -> Any:
        env.owner_exit(t, slot, victim)
        for i, o in enumerate(others):
            env.bpf_storage_get(t, smap, o, create_value=200 + i)

    run.spawn("reader", 0, reader)
    run.spawn("writer", 1, writer, rcu=False)


SCENARIOS = [
    Scenario("local_storage_delete", "a sleepable program holds a task-storage element while user space deletes it",
             2, setup_delete, {"reused_read": False, "freed_read": False},
             {"ttrace_raw_free": E(), "free_after_gp": E({"uaf"}), "free": E({"reused_read"})},
             planted="delete's tasks-trace wait replaced by a normal RCU grace period (slab under the reader)",
             planted_policy="ttrace_raw_free", planted_expect=E({"uaf"}),
             notes={"free_after_gp": "the seed: BPF_MA_FREE_AFTER_GP on local storage breaks sleepable programs",
                    "free": "delete reusing at once (as destroy does): the program reads another task's element"}),
    Scenario("local_storage_destroy", "an RCU reader holds a task's element while the task exits and is destroyed "
             "(reuse_now)", 2, setup_destroy, {"reused_read": False, "freed_read": False},
             {"ttrace_raw_free": E()},
             planted="the reader keeps using the element after its RCU read section ended",
             planted_policy="ttrace_raw_free", planted_expect=E({"reused_read", "freed_read"}),
             notes={"ttrace_raw_free": "destroy runs one RCU GP after the task is unhashed: immediate reuse is safe"}),
]
