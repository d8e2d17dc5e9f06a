"""What machine a benchmark ran on, and an estimate of its CPU's peak float32 FLOP/s.

The peak is a paper number: cores × fp32 lanes per vector × FMA units per core × 2
FLOPs per FMA × clock. Lanes come from the widest vector extension in the CPU flags,
the clock from `lscpu` (max MHz when the kernel reports one, else the current MHz of
`/proc/cpuinfo`); the FMA unit count is not visible to software and is assumed.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Server cores with AVX-512 (Skylake-SP Gold/Platinum and later Xeons) have two 512-bit
# FMA units per core; some cheaper parts have one. Software cannot tell which.
_FMA_UNITS_ASSUMED = 2


@dataclass(frozen=True)
class PeakEstimate:
    """A CPU's paper peak in float32 FLOP/s, with the numbers behind it.

    Attributes:
        cores: Cores counted (the benchmark's threads, at most the usable cores).
        vector_bits: Widest float vector the flags advertise (512, 256 or 128).
        fp32_lanes: vector_bits / 32.
        fma_units: FMA units per core (assumed; see `assumptions`).
        clock_ghz: Clock used.
        flops_per_cycle_per_core: fp32_lanes × fma_units × 2.
        peak_flops: cores × flops_per_cycle_per_core × clock.
        assumptions: Each assumption in words, for printing.
    """

    cores: int
    vector_bits: int
    fp32_lanes: int
    fma_units: int
    clock_ghz: float
    flops_per_cycle_per_core: int
    peak_flops: float
    assumptions: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "assumptions": list(self.assumptions)}


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def lscpu() -> dict[str, str]:
    """`lscpu` as a key -> value dict (empty when lscpu is missing)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}


def _cpuinfo_mhz() -> float | None:
    try:
        match = re.search(r"^cpu MHz\s*:\s*([\d.]+)", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    except OSError:
        return None
    return float(match.group(1)) if match else None


def _cpu_jiffies() -> tuple[int, int] | None:
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


def busy_cores(seconds: float = 0.5) -> float | None:
    """How many cores other processes keep busy, sampled while this one sleeps (Linux).

    With all cores in use, a busy neighbour stalls every OpenMP barrier on a descheduled
    thread, and latencies can grow tenfold; the report notes it.
    """
    import time

    first = _cpu_jiffies()
    time.sleep(seconds)
    second = _cpu_jiffies()
    if first is None or second is None or second[1] == first[1]:
        return None
    return (second[0] - first[0]) / (second[1] - first[1]) * (os.cpu_count() or 1)


def machine_info(threads: int) -> dict[str, Any]:
    """CPU model, cores, the benchmark's thread count, OS, Python, the date (UTC) and `busy_cores`."""
    info = lscpu()
    return {
        "cpu": info.get("Model name") or platform.processor() or "unknown",
        "cores": usable_cores(),
        "threads": threads,
        "hypervisor": info.get("Hypervisor vendor"),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "busy_cores_at_start": busy_cores(),
    }


def estimate_peak(threads: int, *, info: dict[str, str] | None = None, mhz: float | None = None) -> PeakEstimate:
    """Paper peak fp32 FLOP/s of `threads` cores of this CPU.

    Args:
        threads: Cores the benchmark uses (clamped to the usable cores).
        info: `lscpu()` output (read when None; tests pass their own).
        mhz: Clock override in MHz (read from lscpu or /proc/cpuinfo when None).
    """
    info = lscpu() if info is None else info
    flags = set(info.get("Flags", "").split())
    if "avx512f" in flags:
        bits, vector = 512, "AVX-512"
    elif "avx" in flags or "avx2" in flags:
        bits, vector = 256, "AVX/AVX2"
    else:
        bits, vector = 128, "SSE"
    fma = _FMA_UNITS_ASSUMED if ("fma" in flags or "avx512f" in flags) else 1
    assumptions = [
        f"vector width {bits} bits ({vector}, from the CPU flags) = {bits // 32} fp32 lanes",
        f"{fma} FMA unit(s) per core, 2 FLOPs per FMA (assumed: software cannot read the unit count)"
        if fma > 1
        else "no FMA in the flags: 1 multiply-add per lane per cycle counted as 2 FLOPs",
    ]
    if mhz is None:
        max_mhz = info.get("CPU max MHz")
        mhz = float(max_mhz) if max_mhz else _cpuinfo_mhz()
        source = "lscpu max MHz" if max_mhz else "/proc/cpuinfo current MHz (no max reported, e.g. under a hypervisor)"
    else:
        source = "given"
    if not mhz:
        mhz, source = 2000.0, "unknown; 2.0 GHz assumed"
    cores = max(1, min(threads, usable_cores()))
    assumptions += [
        f"clock {mhz / 1000:.2f} GHz ({source}); turbo and AVX-512 down-clocking ignored",
        f"{cores} core(s): the benchmark's threads, one per physical core",
        "float32 only: int8 (VNNI) and bf16/int8 AMX peaks are several times higher",
    ]
    per_cycle = (bits // 32) * fma * 2
    return PeakEstimate(
        cores=cores, vector_bits=bits, fp32_lanes=bits // 32, fma_units=fma, clock_ghz=mhz / 1000,
        flops_per_cycle_per_core=per_cycle, peak_flops=cores * per_cycle * mhz * 1e6, assumptions=tuple(assumptions),
    )  # fmt: skip
