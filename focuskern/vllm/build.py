"""Large foci compiled in a process of their own (no vLLM import).

A focus of thousands of entities takes a large fraction of a second to tokenize and compile, almost all
of it Python and numpy holding the GIL.  Compiled on a thread of the engine's process, it still stalls
the step loop: every time the loop releases the GIL (each torch op of the model's forward does) the
build takes it, and the loop waits up to the interpreter's switch interval to get it back.  So
:class:`BuildProcess` compiles it in a child process, which shares no GIL with the engine:

* started as ``python -m focuskern.vllm.build`` (this package first on its path) by the engine's
  processor when it loads, so that its start (imports, tokenizer, token table: seconds of CPU) is over
  before traffic arrives; it then drops to the lowest CPU priority (:func:`lowest_priority`:
  ``SCHED_IDLE`` where Linux has it, else niceness ``BUILD_NICE``) and compiles only on CPU time the
  engine and the API server leave idle -- on a saturated machine a large focus waits longer to be
  ready, never the other requests;
* sent the tokenizer once, then one :class:`~focuskern.FocusSpec` at a time (pickles over its stdin);
  it answers each with the spec's :func:`~focuskern.programs.compile_spec` (a
  :class:`~focuskern.automaton.Program` of numpy arrays) or the ``TypeError``/``ValueError`` compiling
  raised;
* it exits when its stdin closes: when the engine's process ends, however it ends.
"""
from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

from ..automaton import Program
from ..spec import FocusSpec

BUILD_NICE = 19  # where SCHED_IDLE is not available
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding this focuskern


class BuildProcessError(RuntimeError):
    """The build process could not be started, or stopped answering."""


class BuildProcess:
    """The build process of one engine (module docstring).

    Parameters
    ----------
    tokenizer : the model's tokenizer (pickled to the process; ``None`` for token-id entities only).
    vocab_size : the model's vocabulary.

    Raises
    ------
    BuildProcessError
        when the tokenizer cannot be pickled or the process cannot be started.
    """

    def __init__(self, tokenizer: Any, vocab_size: int):
        try:
            setup = pickle.dumps((tokenizer, vocab_size), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # noqa: BLE001 -- whatever pickling raises: the caller builds in-process
            raise BuildProcessError(f"the tokenizer cannot be sent to a build process ({type(e).__name__}: {e})") from e
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (_PACKAGE_ROOT, os.environ.get("PYTHONPATH"))))}
        try:
            self._proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, env=env)
        except OSError as e:
            raise BuildProcessError(f"the build process did not start ({e})") from e
        self._stop = weakref.finalize(self, _stop, self._proc)
        self._send(setup)

    def compile(self, spec: FocusSpec) -> Program:
        """``spec``'s program, compiled in the process.  Blocks until it is (the GIL released): call it
        off the step loop, one call at a time.  Raises what compiling raised (``TypeError``,
        ``ValueError``: the spec does not fit the model), or :class:`BuildProcessError`."""
        self._send(pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL))
        try:
            ok, value = pickle.load(self._proc.stdout)
        except (EOFError, OSError, pickle.UnpicklingError) as e:
            raise BuildProcessError(f"the build process stopped (exit status {self._proc.poll()})") from e
        if not ok:
            raise value
        return value

    def close(self) -> None:
        """Close its stdin (it exits) and wait for it."""
        self._stop()

    def _send(self, data: bytes) -> None:
        try:
            self._proc.stdin.write(data)
            self._proc.stdin.flush()
        except OSError as e:
            raise BuildProcessError(f"the build process stopped (exit status {self._proc.poll()})") from e


def portable(tokenizer: Any) -> Any:
    """``tokenizer`` as the class it was made from, where vLLM subclassed that per instance (its
    cached-properties wrapper): unpickling vLLM's class would import all of vLLM in the build process."""
    cls = type(tokenizer)
    while cls.__module__.split(".")[0] == "vllm" and cls.__base__ is not object:
        cls = cls.__base__
    if cls is type(tokenizer):
        return tokenizer
    plain = copy.copy(tokenizer)
    plain.__class__ = cls
    return plain


def same(obj: Any) -> Any:
    """``obj`` (what an object that pickles as another one names as its constructor)."""
    return obj


def _stop(proc: subprocess.Popen) -> None:
    try:
        proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()


def lowest_priority() -> None:
    """Put this process at the lowest CPU priority it can take: the ``SCHED_IDLE`` policy (it runs only
    when no other process wants the CPU) where the platform offers it, else niceness ``BUILD_NICE``."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        if hasattr(os, "nice"):
            os.nice(BUILD_NICE - os.nice(0))


def main() -> None:
    """The build process: answer specs from stdin until it closes (module docstring)."""
    from ..programs import compile_spec
    from ..text import token_table

    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever a library prints goes to stderr, not into the answers
    requests = sys.stdin.buffer
    tokenizer, vocab_size = pickle.load(requests)
    token_table(tokenizer, vocab_size)  # built once, at the priority the engine started with
    lowest_priority()
    while True:
        try:
            spec = pickle.load(requests)
        except EOFError:
            # Exit without the interpreter's teardown (torch, tokenizers): at SCHED_IDLE on a busy
            # machine that teardown can outlast the engine's wait, and the process would be killed.
            os._exit(0)
        try:
            answer = (True, compile_spec(spec, vocab_size, token_table(tokenizer, vocab_size), tokenizer))
        except (TypeError, ValueError) as e:
            answer = (False, e)
        pickle.dump(answer, answers, protocol=pickle.HIGHEST_PROTOCOL)
        answers.flush()


if __name__ == "__main__":
    main()
