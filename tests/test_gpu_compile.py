"""Ahead-of-time GPU compilation (``make gpu-compile``): the enumerated configurations are the ones the
launchers launch on each architecture, and one of them compiles for sm_90 without a GPU (skipped without
Triton's CUDA tools)."""
import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from focuskern.ops import _triton_common, triton_configs
from focuskern.ops import focus_attention_triton as fat
from focuskern.ops import focus_attention_tiles as tiles
from focuskern.ops import focus_logits_triton as flt

ROOT = Path(__file__).resolve().parent.parent
TILES = ("BLOCK_M", "BLOCK_N", "BLOCK_D", "BLOCK_S", "BLOCK_V", "BLOCK_K", "num_warps", "num_stages")
ARCHS = (80, 90, 100)  # the targets of make gpu-compile


def tile_key(launch) -> tuple:
    """Kernel, tensor dtypes and the tile constexprs/options of a launch (what its registers depend on)."""
    dtypes = tuple(str(a.dtype) for a in launch.args if hasattr(a, "dtype"))
    return (triton_configs.kernel_name(launch), dtypes[0]) + tuple(launch.kwargs.get(k) for k in TILES)


@pytest.fixture(scope="module")
def enumerated_by_arch():
    return {arch: [launch for _, _, launch in triton_configs.launches(arch)] for arch in ARCHS}


@pytest.fixture(scope="module")
def enumerated(enumerated_by_arch):
    """What is compiled for sm_90: the tiles of a launch off CUDA and under the interpreter."""
    return enumerated_by_arch[tiles.DEFAULT_ARCH]


def test_every_kernel_of_every_triton_module_is_enumerated(enumerated):
    names = {triton_configs.kernel_name(launch) for launch in enumerated}
    for module in triton_configs.triton_modules().values():
        mod = __import__(module, fromlist=["_"])
        kernels = {n for n, v in vars(mod).items() if n.endswith("_kernel") and hasattr(v, "fn")}
        assert kernels and kernels <= names, f"{module}: {sorted(kernels - names)} not enumerated"


@pytest.fixture
def recorded(monkeypatch):
    """Launches the launchers build, recorded instead of run (no kernel executes)."""
    seen = []
    monkeypatch.setattr(_triton_common.Launch, "__call__", lambda self: seen.append(self))
    return seen


@pytest.mark.parametrize("arch", [None, *ARCHS])
def test_attention_launches_are_enumerated(enumerated_by_arch, recorded, monkeypatch, seed, arch):
    """Random shapes, dtypes and call options on a device of compute capability ``arch`` (None: this CPU,
    whose launches take sm_90's tiles): every launch's tiles are among those enumerated for that arch
    (what make gpu-compile compiles for it), every constexpr flag value it sets is set by some enumerated
    launch of the same kernel, and its readout width ``NGP`` is at most an enumerated one (the widest
    holds the most registers)."""
    if arch is not None:
        monkeypatch.setattr(fat, "_device", lambda device: (fat.INTERPRETER_SMS, arch))
    enumerated = enumerated_by_arch[arch or tiles.DEFAULT_ARCH]
    rng = random.Random(seed)
    for _ in range(60):
        dtype = rng.choice(_triton_common.DTYPES)
        Hkv, G, Lq = rng.choice([1, 2, 8]), rng.choice([1, 3, 4, 8, 32]), rng.choice([1, 2, 7, 16, 17, 40, 300])
        B, D, Lk = rng.choice([1, 3]), rng.choice([48, 64, 80, 96, 128, 200, 256]), Lq + rng.choice([0, 5, 900])
        q, k = torch.empty(B, Hkv * G, Lq, D, dtype=dtype), torch.empty(B, Hkv, Lk, D, dtype=dtype)
        groups = rng.choice([0, 1, 64, 65])
        opt = [torch.empty(B, Lk), torch.empty(Hkv * G), torch.zeros(B, dtype=torch.int32)]
        opt = [t if rng.random() < 0.5 else None for t in opt]
        group_args = (torch.zeros(B, Lk, dtype=torch.int32), groups, rng.random() < 0.5,
                      torch.empty(Hkv * G) if rng.random() < 0.5 else None) if groups else (None, 0, False, None)
        fat.launch_focus_attention_mass(q, k, k, *opt, rng.random() < 0.5, 0.1, *group_args, 5.0)
    compiled = {tile_key(launch) for launch in enumerated}
    for launch in recorded:
        assert tile_key(launch) in compiled, f"seed {seed}: sm_{arch} {tile_key(launch)} is launched but not compiled"
        same = [e for e in enumerated if e.kernel is launch.kernel]
        for flag, value in launch.kwargs.items():
            if flag == "NGP":
                assert value <= max(e.kwargs[flag] for e in same), f"seed {seed}: NGP={value}"
            elif flag not in TILES and flag != "DOT_F32":  # DOT_F32: the interpreter's bfloat16 upcast
                assert any(e.kwargs.get(flag) == value for e in same), (
                    f"seed {seed}: {triton_configs.kernel_name(launch)} {flag}={value} is never compiled")


def test_tiles_differ_per_arch_family(enumerated_by_arch):
    """The tiles the launcher picks depend on the arch family (sm_86 takes sm_80's, sm_120 sm_100's), and
    the enumeration follows them: sm_80 and sm_100 compile tiles sm_90 never launches."""
    assert [tiles.arch_family(a) for a in (80, 86, 89, 90, 100, 120)] == [80, 80, 80, 90, 100, 100]
    keys = {arch: {tile_key(launch) for launch in launches} for arch, launches in enumerated_by_arch.items()}
    assert keys[80] != keys[90] and keys[100] != keys[90]
    prefill = dict(R=4 * 4096, Lq=4096, block_d=128, elem=2)  # bfloat16 prefill, D = 128: sm_90 as before
    assert tiles.launch_config(**prefill) == tiles.launch_config(**prefill, arch=90) == dict(
        BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3)
    assert tiles.launch_config(**prefill, arch=86)["BLOCK_N"] == 32  # 128 x 64 spilled on sm_80


def test_device_arch_is_queried_once_per_device(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: calls.append(index) or (8, 6))
    _triton_common.device_arch.cache_clear()
    try:
        assert [_triton_common.device_arch(3) for _ in range(3)] == [86, 86, 86] and calls == [3]
    finally:
        _triton_common.device_arch.cache_clear()


def test_gpu_compile_enumerates_each_archs_launches(monkeypatch):
    """benchmarks/gpu_compile.py compiles, for each arch, the launches the launchers pick on that arch
    (its dedup key needs JIT kernels, not the interpreter's: every launch is its own binary here)."""
    monkeypatch.setattr(triton_configs, "compile_key", lambda launch, arch: str(id(launch)))
    spec = importlib.util.spec_from_file_location("gpu_compile", ROOT / "benchmarks" / "gpu_compile.py")
    gpu_compile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_compile)
    match = "focus_attention bfloat16 D=64 (prefill|verify) mass$"
    jobs = gpu_compile.enumerate_jobs([80, 90], None, False, match)
    for arch in (80, 90):
        want = {tile_key(launch) for family, label, launch in triton_configs.launches(arch)
                if family == "focus_attention" and label in ("bfloat16 D=64 prefill mass", "bfloat16 D=64 verify mass")}
        assert {tile_key(launch) for a, _, _, launch in jobs if a == arch} == want


def test_logits_launch_is_enumerated(enumerated, recorded):
    for dtype in _triton_common.DTYPES:
        flt.launch_focus_logits(torch.empty(3, 5000, dtype=dtype), torch.tensor([0, 1, 1, 2], dtype=torch.int32),
                                torch.tensor([7, 9], dtype=torch.int32), torch.ones(2), torch.zeros(3),
                                torch.zeros(3, 3), torch.zeros(3, dtype=torch.int32))
    assert {tile_key(launch) for launch in recorded} <= {tile_key(launch) for launch in enumerated}


def _ptxas_missing() -> str | None:
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        return None if os.path.exists(get_ptxas(90).path) else "Triton's ptxas is missing"
    except Exception as exc:  # no CUDA backend in this Triton build
        return f"no Triton CUDA toolchain: {exc}"


@pytest.mark.skipif(_ptxas_missing() is not None, reason=str(_ptxas_missing()))
def test_logits_configurations_compile_for_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")
    run = subprocess.run([sys.executable, "benchmarks/gpu_compile.py", "--only", "focus_logits", "--arch", "90",
                          "--jobs", "1", "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads((tmp_path / "kernels.json").read_text())
    rows = report["rows"]
    assert len(rows) == len(_triton_common.DTYPES) and {r["arch"] for r in rows} == {"sm_90"}
    assert all(r["kernel"] == "_focus_logits_kernel" and r["registers"] > 0 and r["spill_stores"] == 0 for r in rows)
    assert "| _focus_logits_kernel | sm_90 | 3 |" in (tmp_path / "kernels.md").read_text()
