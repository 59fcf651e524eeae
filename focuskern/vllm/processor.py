"""``FocusLogitsProcessor``: the vLLM logits processor (imports vLLM; see :mod:`focuskern.vllm`)."""
from __future__ import annotations

import functools
import importlib
import sys
from typing import TYPE_CHECKING, Optional

import torch
from vllm.logger import init_logger
from vllm.tokenizers import cached_tokenizer_from_config
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor

from .admission import Limits, ModelFacts, admit
from .build import portable, same
from .rows import BatchFocus
from .slots import SlotFocus

try:  # Model Runner V2 (vLLM >= 0.3x); without it the processor is a V1 processor only
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor as RunnerV2LogitsProcessor
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcRequestState
except ImportError:
    RunnerV2LogitsProcessor = LogitsProcRequestState = None

if TYPE_CHECKING:
    from vllm import SamplingParams
    from vllm.config import VllmConfig

# Under vLLM's logger, so that its handler, format and process prefix apply (info lines included).
logger = init_logger("vllm.focuskern")

# vLLM loads entry-point plugins into whichever runner it starts, and V2 refuses a V1-only class, so
# one class implements both interfaces (the V1 one by default).
_BASES = (LogitsProcessor,) if RunnerV2LogitsProcessor is None else (LogitsProcessor, RunnerV2LogitsProcessor)


class FocusLogitsProcessor(*_BASES):
    """Steer each request toward its ``extra_args["focus"]`` entities (see :mod:`focuskern.vllm`).

    Parameters
    ----------
    vllm_config : the engine's config (model vocabulary and tokenizer; speculative decoding).
    device_or_req_states : V1: the logits' ``torch.device``; Model Runner V2: its
        ``LogitsProcRequestState`` (slot buffers read for prompt lengths and resumed histories).
    is_pin_memory : V1: stage per-step token copies in pinned memory.

    One ``FocusState`` launch per step biases every focused row (``apply``); requests without focus are
    untouched, and a step without focused requests costs nothing.  Not argmax-invariant: focus changes
    greedy choices.
    """

    def __init__(self, vllm_config: "VllmConfig", device_or_req_states, is_pin_memory: bool = False):
        Limits.from_env()  # a malformed FOCUSKERN_MAX_* variable stops the engine at start, by name
        model = vllm_config.model_config
        # An engine without a tokenizer (skip_tokenizer_init, or a config that names none) steers
        # token-id entities on opaque tokens; strings are refused at admission there.
        tokenizer = None if getattr(model, "skip_tokenizer_init", True) else _LazyTokenizer(model)
        vocab = model.get_vocab_size()
        self._req_states = None
        self._batch: Optional[BatchFocus] = None
        self._slots: Optional[SlotFocus] = None
        logger.info("focuskern %s loaded from %s", type(self).__name__, sys.modules["focuskern"].__file__)
        if LogitsProcRequestState is not None and isinstance(device_or_req_states, LogitsProcRequestState):
            self._req_states = device_or_req_states
            self._slots = SlotFocus(device_or_req_states.max_num_reqs, vocab, device_or_req_states.device, tokenizer,
                                    drafts=_drafts(vllm_config))
        else:
            self._batch = BatchFocus(vocab, device_or_req_states, tokenizer, pin_memory=is_pin_memory)
            if not self._stands_aside(vllm_config):
                self._batch.start_builds()  # large foci's build process, ready before traffic arrives
            if vllm_config.scheduler_config.async_scheduling and not _listed(model.logits_processors):
                logger.warning("focuskern: with async scheduling pass FocusLogitsProcessor in "
                               "logits_processors=[...] (not only as a plugin), or vLLM leaves placeholder "
                               "tokens in the output lists that focused rows have to wait for")

    def _stands_aside(self, vllm_config: "VllmConfig") -> bool:
        """Whether this instance leaves the steering to another (:class:`FocusLogitsPlugin`)."""
        return False

    @classmethod
    def validate_params(cls, sampling_params: "SamplingParams") -> None:
        """Reject at admission every focus the engine could fail on (that request fails, HTTP 400; the
        engine keeps serving): over the operator's limits, malformed, or -- with the model's vocabulary
        and tokenizer, found on vLLM's admitting ``InputProcessor`` -- an entity that tokenizes to
        nothing or a token id outside the vocabulary (:func:`~focuskern.vllm.admission.admit`).  A focus
        sent to a V1-runner engine that runs speculative decoding is refused too: V1 does not load logits
        processors there, so it would be served unfocused (Model Runner V2 steers every draft row).

        Raises
        ------
        ValueError
            naming ``focus`` and the field or limit, e.g. ``focus.bias must be a finite number ...``.
        """
        engine = _admitting_engine()
        spec = admit(sampling_params, Limits.from_env(), _model_facts(engine))
        config = getattr(engine, "vllm_config", None)
        if spec is not None and _drafts(config) and not getattr(config, "use_v2_model_runner", False):
            raise ValueError("focus is not supported by this engine: it runs speculative decoding "
                             "(--speculative-config) on vLLM's V1 model runner, which loads no logits "
                             "processor then; send the request without focus, or serve focused traffic "
                             "from an engine without it or on Model Runner V2 (VLLM_USE_V2_MODEL_RUNNER=1)")

    def is_argmax_invariant(self) -> bool:
        return False

    # ------------------------------------------------------------------ V1
    def update_state(self, batch_update: Optional[BatchUpdate]) -> None:
        self._batch.update(batch_update)

    def apply(self, logits: torch.Tensor, ctx=None) -> torch.Tensor:
        """V1: ``apply(logits)`` with ``logits`` [num_reqs, V]; V2: ``apply(logits, ctx)`` with
        ``ctx`` the step's ``LogitsContext``.  Modifies ``logits`` in place and returns it."""
        if ctx is None:
            return self._batch.apply(logits)
        return self._slots.apply(logits, ctx.expanded_idx_mapping, ctx.idx_mapping_np, ctx.input_ids, ctx.pos,
                                 self._req_states.prompt_len.gpu, ctx.expanded_local_pos)

    # ------------------------------------------------------------------ V2
    def add_request(self, req_idx: int, sampling_params: "SamplingParams") -> bool:
        states = self._req_states
        return self._slots.add(req_idx, sampling_params, int(states.prompt_len.np[req_idx]),
                               int(states.prefill_len.np[req_idx]))

    def apply_staged_writes(self) -> None:
        tokens = self._req_states.all_token_ids.gpu
        self._slots.flush(lambda slot, start, stop: tokens[slot, start:stop].tolist())


class FocusLogitsPlugin(FocusLogitsProcessor):
    """What the ``vllm.logits_processors`` entry point loads into every engine (``vllm serve``).

    vLLM loads entry-point plugins *and* the classes given in ``logits_processors=[...]``, so an engine
    that also lists :class:`FocusLogitsProcessor` would steer twice: then this one stands aside (its
    hooks return at once).  List ``FocusLogitsProcessor``, never this class.
    """

    def __init__(self, vllm_config: "VllmConfig", device_or_req_states, is_pin_memory: bool = False):
        super().__init__(vllm_config, device_or_req_states, is_pin_memory)
        self.inert = self._stands_aside(vllm_config)

    def _stands_aside(self, vllm_config: "VllmConfig") -> bool:
        return _listed(vllm_config.model_config.logits_processors)

    def update_state(self, batch_update: Optional[BatchUpdate]) -> None:
        if not self.inert:
            super().update_state(batch_update)

    def apply(self, logits: torch.Tensor, ctx=None) -> torch.Tensor:
        return logits if self.inert else super().apply(logits, ctx)

    def add_request(self, req_idx: int, sampling_params: "SamplingParams") -> bool:
        return not self.inert and super().add_request(req_idx, sampling_params)

    def apply_staged_writes(self) -> None:
        if not self.inert:
            super().apply_staged_writes()


class _LazyTokenizer:
    """The model's tokenizer, loaded when the first focus request arrives (an engine with no focus at
    all never pays for it).  Offers what ``FocusState`` uses: ``encode`` and, by delegation, what its
    token table reads (``convert_ids_to_tokens``, the special tokens, ``len``)."""

    def __init__(self, model_config):
        self._config = model_config
        self._tokenizer = None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self._loaded().encode(text, add_special_tokens=add_special_tokens)

    def decode(self, ids: list[int]) -> str:
        return self._loaded().decode(ids)

    def __len__(self) -> int:
        return len(self._loaded())

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._loaded(), name)

    def __reduce__(self):
        """Pickled (for the build process) as the plain tokenizer: :func:`~focuskern.vllm.build.portable`."""
        return same, (portable(self._loaded()),)

    def _loaded(self):
        if self._tokenizer is None:
            self._tokenizer = cached_tokenizer_from_config(self._config)
            if self._tokenizer is None:
                raise ValueError("focus.entities: strings need the model's tokenizer, which this engine "
                                 "skips (skip_tokenizer_init); give token ids")
        return self._tokenizer


_WARNED_NO_MODEL = False


def _drafts(vllm_config) -> int:
    """Draft tokens per step of the engine's speculative decoding (0 without, or without a config)."""
    speculative = getattr(vllm_config, "speculative_config", None)
    return 0 if speculative is None else int(speculative.num_speculative_tokens or 0)


def _admitting_engine(depth: int = 8):
    """The vLLM ``InputProcessor`` whose admission called ``validate_params``: vLLM hands the hook the
    ``SamplingParams`` only, so the caller's frames are searched for it (0.32: ``_validate_params`` ->
    the validator -> here; 0.29: through ``SamplingParams.verify``).  ``None`` where it is not found."""
    frame = sys._getframe(2)
    for _ in range(depth):
        if frame is None:
            break
        owner = frame.f_locals.get("self")
        if hasattr(getattr(owner, "model_config", None), "get_vocab_size") and hasattr(owner, "renderer"):
            return owner
        frame = frame.f_back
    return None


def _model_facts(engine) -> Optional[ModelFacts]:
    """The admitting engine's vocabulary and tokenizer; ``None`` (logged once) without an engine: then
    ids past the vocabulary are caught in the engine."""
    if engine is not None:
        return ModelFacts(engine.model_config.get_vocab_size(), engine.tokenizer)
    global _WARNED_NO_MODEL
    if not _WARNED_NO_MODEL:
        _WARNED_NO_MODEL = True
        logger.warning("focuskern: admission could not find vLLM's model config; a focus is checked for "
                       "the model only in the engine (one that does not fit is logged and served unfocused)")
    return None


def _listed(processors) -> bool:
    """Whether ``FocusLogitsProcessor`` or a subclass of it is among ``logits_processors`` (classes or
    ``"module:Class"`` strings, resolved as vLLM resolves them; one that does not resolve is not ours)."""
    for p in processors or ():
        if isinstance(p, str):
            module, _, name = p.partition(":")
            try:
                p = functools.reduce(getattr, name.split("."), importlib.import_module(module))
            except (ImportError, AttributeError, ValueError):
                continue
        if isinstance(p, type) and issubclass(p, FocusLogitsProcessor) and p is not FocusLogitsPlugin:
            return True
    return False
