"""Fuzzed focus objects against every backend (issue 21; the generator and the checks are in
``tests/fuzz_focus.py``).  One subprocess per backend runs all its cases, so a crash of a kernel fails
the test, naming the case it was running, instead of ending the test run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import focuskern as fk

ROOT = Path(__file__).resolve().parents[1]
CASES = {"torch": 300, "cpp": 300, "triton": 150}  # the Triton interpreter takes ~0.1 s per case


@pytest.mark.parametrize("backend", sorted(CASES))
def test_fuzzed_focus_is_refused_by_name_or_steers_only_its_tokens(backend, seed):
    """Bad foci raise ``TypeError``/``ValueError`` naming the field; good ones run three steps that
    change no logit but their entity tokens and end of text (one scale for all with ``alpha > 0``),
    never a row without focus, all finite; the stateless op refuses ids it cannot take, by name."""
    if fk.backends()[backend] != "available":  # triton: conftest sets TRITON_INTERPRET=1 without a GPU
        pytest.skip(fk.backends()[backend])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if backend == "triton":
        env["TRITON_INTERPRET"] = "1"
    cmd = [sys.executable, str(ROOT / "tests" / "fuzz_focus.py"), "--backend", backend, "--seed", str(seed),
           "--cases", str(CASES[backend])]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    lines = run.stdout.splitlines()
    started = [line for line in lines if line.startswith("case ")]
    assert run.returncode == 0, (f"the worker died (exit {run.returncode}) during "
                                 f"{started[-1] if started else 'start-up'}:\n{run.stderr[-3000:]}")
    assert len(started) == CASES[backend]
    failures = json.loads(lines[-1])["failures"]
    assert not failures, "\n".join(failures[:20])
