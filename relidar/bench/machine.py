"""The machine a benchmark ran on, recorded in its JSON: a figure means nothing without it (issue 22: the
README's spconv ratio of 0.51 was measured where spconv took 300 ms; another 2-core Xeon gave 1.16).

CPU model (``/proc/cpuinfo``, else ``lscpu``, else the platform's word), logical CPUs, the CPUs this process may
use and the physical cores among them, the BLAS numpy and torch were built with, the thread count every side
of the benchmark ran at, and the GPU where torch sees one. Every probe is small and falls back to None: a
field the machine does not tell never stops a benchmark.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any


def cpu_model() -> str | None:
    """The CPU's marketing name, e.g. ``AMD EPYC`` or ``Intel(R) Xeon(R) CPU @ 2.20GHz``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    match = re.search(r"^Model name:\s*(.+)$", out, re.MULTILINE)
    return match.group(1).strip() if match else (platform.processor() or None)


def usable_cpus() -> int:
    """CPUs this process may run on (a container's or taskset's limit, not the host's)."""
    return len(os.sched_getaffinity(0))


def physical_cores() -> int | None:
    """Physical cores among the usable CPUs (SMT siblings counted once), from sysfs; None where it says nothing."""
    cores = set()
    for cpu in os.sched_getaffinity(0):
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip()))
        except OSError:
            return None
    return len(cores) or None


def default_threads() -> int:
    """The thread count a benchmark uses unless told: one per physical core (ONNX Runtime's and PyTorch's own
    default), the usable CPUs where the topology cannot be read."""
    return physical_cores() or usable_cpus()


def numpy_blas() -> str | None:
    """``name version`` of the BLAS numpy was built with (numpy's build config)."""
    import numpy as np

    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except (TypeError, KeyError):  # numpy before 1.25: no dict form
        return None
    return " ".join(str(blas[k]) for k in ("name", "version") if blas.get(k)) or None


def torch_build() -> dict[str, Any] | None:
    """torch's BLAS and the CPU kernels it picked (``torch.__config__.show()``); None where torch is not loaded
    (a benchmark that never imported it does not pay for it here)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    text = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=([^,\s]+)", text)
    capability = re.search(r"CPU capability usage:\s*(\S+)", text)
    mkl = re.search(r"Math Kernel Library Version ([^\s-]+)", text)
    return {"version": torch.__version__, "blas": blas.group(1) if blas else None,
            "mkl": mkl.group(1) if mkl else None, "cpu_capability": capability.group(1) if capability else None,
            "threads": torch.get_num_threads()}


def gpu_name() -> str | None:
    """The first CUDA device's name where a loaded torch sees one."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(0)


def machine_info(threads: int) -> dict[str, Any]:
    """What a benchmark's JSON says about where it ran; ``threads``: the count every side ran at."""
    return {"cpu_model": cpu_model(), "logical_cpus": os.cpu_count(), "usable_cpus": usable_cpus(),
            "physical_cores": physical_cores(), "threads": int(threads), "numpy_blas": numpy_blas(),
            "torch": torch_build(), "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
            "gpu": gpu_name(), "platform": platform.platform(), "python": platform.python_version(),
            "load_average": [round(x, 2) for x in os.getloadavg()]}
