"""Where a benchmark ran: the machine, the code's commit, the time (read-only look-ups)."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from anomaly.packages import installed_versions

#: The distributions whose versions move our figures.
OUR_PACKAGES = ("anomaly-inspect", "torch", "torchvision", "timm", "numpy", "faiss-cpu", "opencv-python-headless")


def package_versions(names: tuple[str, ...] = OUR_PACKAGES) -> dict[str, str]:
    """``{distribution: version}`` of those of ``names`` that are installed."""
    return installed_versions(names)


def run_provenance() -> dict[str, Any]:
    """When (UTC) and where a benchmark starts, with our packages' versions, for its JSON report."""
    return {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine_info(),
            "packages": package_versions()}


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, memory, OS and Python of this machine, and its current load."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {
        "cpu_count": os.cpu_count(),
        "usable_cores": usable,
        "cpu_model": _cpu_model(),
        "cpu_id": _cpu_id(),
        "memory_gb": _memory_gb(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": _load(),
    }


def _cpu_model() -> str:
    return _first_cpu().get("model name") or platform.processor() or platform.machine()


#: The CPU features that decide which numeric kernels numpy, OpenBLAS, MKL and oneDNN run.
#: Seen here: two AMD hosts with and without AVX-512 gave the same scores to the last digit
#: stored, an Intel host other ones (the maker is in ``cpu_model``).
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni",
              "amx_tile")


def _cpu_id() -> dict[str, Any] | None:
    """CPU family, model, stepping and SIMD features (Linux): "AMD EPYC" alone does not tell
    two hosts of a VM apart, and run-to-run float differences between sessions were seen."""
    fields = _first_cpu()
    if not fields:
        return None
    flags = set(fields.get("flags", "").split())
    return {"family": fields.get("cpu family"), "model": fields.get("model"), "stepping": fields.get("stepping"),
            "simd": [f for f in SIMD_FLAGS if f in flags]}


def _first_cpu() -> dict[str, str]:
    """The first processor's ``key: value`` fields of ``/proc/cpuinfo``; empty where there is none."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break  # the first processor is enough
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        return {}
    return fields


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def git_commit(repo: Path) -> dict[str, Any]:
    """The commit checked out at ``repo`` and whether tracked files differ from it."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if sha else None
    return {"sha": sha, "dirty": bool(status) if status is not None else None}
