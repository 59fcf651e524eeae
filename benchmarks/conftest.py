"""pytest-benchmark settings for ``python -m pytest benchmarks`` (the repo's pytest.ini only covers tests/).

* ``--benchmark-max-time`` defaults to ``FOCUSKERN_BENCH_MAX_TIME`` (0.25 s) instead of the plugin's 1 s,
  so the whole CPU file stays within a few minutes on a small machine; pass the option to override.
* Torch runs with ``FOCUSKERN_BENCH_THREADS`` intra-op threads (default 1; 0 keeps torch's default).
  On small or shared VMs (e.g. 2 vCPUs that share about one physical core) a second OpenMP thread is
  descheduled for whole scheduler ticks, and the medians then measure 4 ms ticks, not the ops.
* Every row carries ``extra_info`` (device, torch/triton versions, threads, date) through the ``bench``
  fixture; the same data goes into the JSON's ``machine_info`` and the report header.
"""
from __future__ import annotations

import os

import pytest
import torch

from focuskern.metadata import run_metadata


DEFAULT_MAX_TIME = os.environ.get("FOCUSKERN_BENCH_MAX_TIME", "0.25")
THREADS = int(os.environ.get("FOCUSKERN_BENCH_THREADS", "1"))


def _environment() -> dict:
    return run_metadata("cpu")


def _option_given(config, name: str) -> bool:
    words = list(config.invocation_params.args) + os.environ.get("PYTEST_ADDOPTS", "").split()
    return any(str(w) == name or str(w).startswith(name + "=") for w in words)


def pytest_configure(config):
    # Runs before pytest-benchmark's own (trylast) pytest_configure reads the options.
    if hasattr(config.option, "benchmark_max_time") and not _option_given(config, "--benchmark-max-time"):
        config.option.benchmark_max_time = DEFAULT_MAX_TIME
    if THREADS > 0:
        torch.set_num_threads(THREADS)


def pytest_report_header(config):
    env = _environment()
    return (f"focuskern benchmarks: {env['device']}, torch {env['torch']}, triton {env.get('triton', 'not installed')}, "
            f"{env['torch_threads']} torch thread(s) (FOCUSKERN_BENCH_THREADS), "
            f"max-time default {DEFAULT_MAX_TIME}s, {env['date_utc']}")


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["focuskern"] = _environment()


@pytest.fixture(scope="session")
def bench_env() -> dict:
    return _environment()


@pytest.fixture
def bench(benchmark, bench_env):
    """The ``benchmark`` fixture with the environment in every row's ``extra_info``."""
    benchmark.extra_info.update(bench_env)
    return benchmark


def pytest_benchmark_update_json(config, benchmarks, output_json):
    # Every raw timing would make the committed JSON tens of MB; the summary statistics stay.
    for row in output_json["benchmarks"]:
        row["stats"].pop("data", None)
