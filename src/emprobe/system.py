"""Facts about this machine that the pipeline acts on: whether a process lives, how many CPU cores are free,
whether the CPU has bfloat16 units, how much memory is free."""

import os
import time
from functools import cache
from pathlib import Path


def process_alive(pid: int) -> bool:
    """Whether a process of this machine is still running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def free_cpus(window: float = 0.2) -> int:
    """The CPU cores this process may use that other processes are not keeping busy, measured over `window`
    seconds (all of them where the kernel's counters cannot be read). A busy neighbour then costs its share
    instead of stalling every thread at OpenMP barriers. OMP_NUM_THREADS, where set (Ray sets it to an actor's
    CPUs), caps it."""
    allowed = len(os.sched_getaffinity(0))
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        allowed = min(allowed, int(omp))
    first = _cpu_times()
    if first is None:
        return allowed
    time.sleep(window)
    second = _cpu_times()
    if second is None:
        return allowed
    total, idle = second[0] - first[0], second[1] - first[1]
    busy_cores = (total - idle) / total * (os.cpu_count() or allowed) if total > 0 else 0.0
    return max(1, min(allowed, round(allowed - busy_cores)))


def _cpu_times() -> tuple[int, int] | None:
    """(all jiffies, idle + iowait jiffies) of every CPU, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(fields), fields[3] + (fields[4] if len(fields) > 4 else 0)


@cache
def cpu_has_bf16() -> bool:
    """Whether the CPU reports bfloat16 matrix units (AVX-512 BF16 or AMX), read from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def available_memory() -> int:
    """Bytes of memory available to new allocations (MemAvailable), 4 GiB where the system does not say."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 4 << 30
