"""Facts about the machine that benchmark and evaluation results record (standard library only, so
the vLLM environment can import it too)."""
from __future__ import annotations

import os
import platform


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
