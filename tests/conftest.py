import os
import random

import pytest
import torch

# Triton kernels run on CPU tensors through the interpreter when no GPU is present; the variable
# must be set before triton.jit decorates the kernels, i.e. before any backend module is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

# (rtol, atol) against float64 math: two roundings of the logits dtype at most.
TOLERANCES = {
    torch.float32: (1e-5, 1e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")
    config.addinivalue_line("markers", "model: loads the embedded SmolLM2 model (slow)")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> str:
    """The embedded SmolLM2 dequantized once per session into a Hugging Face folder (model and
    tokenizer): loading that takes about a second, each load of the ``.gguf`` dequantizes for ~20 s.
    The ``.gguf`` path itself is still loaded by tests/test_coverage.py (the CLI's default model)."""
    from focuskern.experiments.models import save_default_model

    path = str(tmp_path_factory.mktemp("smollm2"))
    save_default_model(path)
    return path


@pytest.fixture(autouse=True)
def seed(request):
    """Seeds ``random`` and torch for every test with a fresh seed, printed (pytest shows it when the
    test fails); ``FOCUSKERN_TEST_SEED=<seed>`` replays a run."""
    value = int(os.environ.get("FOCUSKERN_TEST_SEED") or random.SystemRandom().randrange(2**31))
    print(f"seed {value} (replay: FOCUSKERN_TEST_SEED={value} pytest '{request.node.nodeid}')")
    random.seed(value)
    torch.manual_seed(value)
    return value
