"""The engine-facing halves of the vLLM processor, without importing vLLM: one
:class:`~focuskern.FocusState` kept in step with the engine's rows, one launch per decoding step.

* :class:`BatchFocus` follows vLLM V1's *persistent batch*: ``BatchUpdate`` s (removed, added, moved)
  move state rows around; each request's newest token is read from its live ``output_tok_ids`` list.
* :class:`~focuskern.vllm.slots.SlotFocus` follows Model Runner V2's *request slots* (and its
  speculative decoding's rows per draft token).

Both hold a row whose request generated nothing since the last step (a prompt still being read, in
chunks or after preemption) instead of advancing it, and replay the history of a request that joins
with tokens already generated (a resumed one).

A large focus (more than ``OFF_LOOP_ENTITIES`` entities or ``OFF_LOOP_CHARS`` characters of string
entities: seconds of tokenizing and compiling for tens of thousands) is not built in the engine's
step, where every other request would wait for it: :class:`BatchFocus` builds it as a ``FocusState``
of its own -- compiled in a build process (:mod:`focuskern.vllm.build`: a thread of the engine's
process would hold the GIL against the step loop), on a worker thread where that process cannot run --
serves the row unfocused meanwhile, and steers it from the first step after it is ready (the tokens
generated meanwhile replayed first).  Smaller ones (tens of ms) are
built in the step, so their output does not depend on timing.  ``SlotFocus`` (Model Runner V2)
builds every focus in the step.
"""
from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from ..spec import FocusSpec
from ..state import FocusState
from .build import BuildProcess, BuildProcessError
from .params import spec_from_params

log = logging.getLogger("focuskern.vllm")

OFF_LOOP_ENTITIES = 64  # about 25 ms to tokenize and compile on one CPU core
OFF_LOOP_CHARS = 4096


def built_off_loop(spec: FocusSpec) -> bool:
    """Whether ``spec`` is large enough to be built on the worker thread (module docstring)."""
    return (len(spec.entities) > OFF_LOOP_ENTITIES
            or sum(len(e) for e in spec.entities if isinstance(e, str)) > OFF_LOOP_CHARS)


class _Rows:
    """A FocusState and the request specs that feed it (shared by both engine interfaces)."""

    def __init__(self, rows: int, vocab_size: int, device, tokenizer, backend: str, pin_memory: bool):
        self.state = FocusState([None] * rows, vocab_size, device, tokenizer, backend=backend)
        self.device = self.state.device
        self.pin_memory = pin_memory and self.device.type == "cuda"
        self._new_state = (vocab_size, self.device, tokenizer, backend)
        self._builder: Optional[ThreadPoolExecutor] = None  # started by the first large focus
        self._process: Union[None, bool, BuildProcess] = None  # False: it failed, build on the thread

    def build_later(self, spec: FocusSpec) -> Future:
        """A one-row ``FocusState`` of ``spec``, built by the worker thread (module docstring)."""
        return self._worker().submit(self._build, spec)

    def start_builds(self) -> Future:
        """Start the build process now, on the worker thread (the engine's processor does when it loads,
        so that the first large focus does not wait for it); otherwise the first large focus does."""
        return self._worker().submit(self._started)

    def _worker(self) -> ThreadPoolExecutor:
        if self._builder is None:
            self._builder = ThreadPoolExecutor(1, thread_name_prefix="focuskern-build")
        return self._builder

    def _started(self) -> Union[bool, BuildProcess]:
        """(The worker thread.)  The build process, started on first use; ``False`` where it cannot
        start (logged once): large foci are compiled on this thread then."""
        if self._process is None:
            try:
                self._process = BuildProcess(self._new_state[2], self._new_state[0])
            except BuildProcessError as e:
                self._give_up(e)
        return self._process

    def _give_up(self, error: BuildProcessError) -> None:
        log.warning("focuskern: large foci are compiled in the engine's process from now on: %s", error)
        if self._process:
            self._process.close()
        self._process = False

    def _build(self, spec: FocusSpec) -> FocusState:
        """(The worker thread.)  ``spec``'s program compiled by the build process; where it cannot start
        or stops answering (logged), compiled here from then on."""
        vocab_size, device, tokenizer, backend = self._new_state
        program = None
        process = self._started()
        if process:
            try:
                program = process.compile(spec)
            except BuildProcessError as e:
                self._give_up(e)
        state = FocusState([None], vocab_size, device, tokenizer, backend=backend)
        state.set_row(0, spec, program)
        return state

    def spec(self, params: Any) -> Optional[FocusSpec]:
        """The request's focus; ``None`` without one.  Admission (``validate_params``) refuses every
        focus that can fail here; should one still fail, an exception inside the engine's step would stop
        the engine for every request, and vLLM offers a logits processor no way to fail one request: the
        request is served unfocused, logged as an error."""
        try:
            return spec_from_params(params)
        except Exception as e:  # noqa: BLE001 -- nothing a request sends may stop the engine
            _unfocused(e)
            return None

    def set_row(self, row: int, spec: Optional[FocusSpec]) -> bool:
        """Give ``row`` ``spec`` (a fresh state); ``False`` (the row untouched, logged as an error) if the
        spec does not fit this model -- which admission checks, where it finds the model."""
        try:
            self.state.set_row(row, spec)  # tokenizes the entities of a spec it has not seen before
            return spec is not None
        except Exception as e:  # noqa: BLE001 -- nothing left after tokenizing, an id >= vocab_size, ...
            _unfocused(e)
            self.state.set_row(row, None)
            return False

    def host_to_device(self, array: np.ndarray) -> torch.Tensor:
        """``array`` on the state's device; on CUDA through pinned memory, so the copy is asynchronous
        (the pinned block comes from torch's caching host allocator, which tracks its stream use)."""
        host = torch.from_numpy(array)
        if self.device.type == "cpu":
            return host
        return (host.pin_memory() if self.pin_memory else host).to(self.device, non_blocking=True)


def _unfocused(error: Exception) -> None:
    log.error("focuskern: request served without focus (admission should have refused it): %s: %s",
              type(error).__name__, str(error)[:400])


class BatchFocus(_Rows):
    """Focus for vLLM V1's persistent batch (see :meth:`update`, :meth:`apply`).

    Parameters
    ----------
    vocab_size : the model's vocabulary (logits may be wider).
    device : the logits' device.
    tokenizer : the model's tokenizer (for string entities).
    backend : FocusState kernel backend.
    pin_memory : stage the per-step token copy in pinned memory (CUDA).

    Per row it keeps the request's live output list and how many of its tokens the automaton has
    consumed; per step that is ``O(rows)`` host work and one ``[B]`` copy, independent of the number of
    entities.  A row with a large focus has its own ``FocusState`` (module docstring): one more launch
    per step for it, once it is built.
    """

    def __init__(self, vocab_size: int, device, tokenizer=None, *, backend: str = "auto", pin_memory: bool = False):
        super().__init__(0, vocab_size, device, tokenizer, backend, pin_memory)
        self.specs: list[Optional[FocusSpec]] = []
        self.outputs: list[Optional[Sequence[int]]] = []  # live output lists of the focused rows
        self.fed: list[int] = []  # tokens of outputs[r] the row's automaton has consumed
        # Rows with a large focus: its FocusState, or the Future building it (the shared row is None).
        self.own: list[Union[None, Future, FocusState]] = []
        self._tokens = np.zeros(0, dtype=np.int32)
        self._hold = np.zeros(0, dtype=bool)
        self._focused = 0
        self._warned_placeholder = False

    def update(self, batch_update) -> None:
        """Apply a vLLM ``BatchUpdate`` (``None``: the batch did not change): removed, then added, then
        moved (``MoveDirectionality.SWAP`` exchanges, anything else moves), then trim or grow to its
        ``batch_size``.  Only the named rows are touched."""
        if batch_update is None:
            return
        for row in batch_update.removed:
            if row < len(self.specs) and self.specs[row] is not None:
                self._assign(row, None, None)
        for row, params, _prompt, output in batch_update.added:
            self._grow(row + 1)
            spec = self.spec(params)
            if spec is not None or self.specs[row] is not None:
                self._assign(row, spec, output)
        for src, dst, direction in batch_update.moved:
            if self.specs[src] is None and self.specs[dst] is None:
                continue  # neither row is focused: no state to move
            if direction.name == "SWAP":
                self.state.swap(src, dst)
                for lst in (self.specs, self.outputs, self.fed, self.own):
                    lst[src], lst[dst] = lst[dst], lst[src]
            else:
                self.state.move(src, dst)
                for lst, empty in ((self.specs, None), (self.outputs, None), (self.fed, 0), (self.own, None)):
                    lst[dst], lst[src] = lst[src], empty
        self._grow(batch_update.batch_size)
        self.state.resize(batch_update.batch_size)
        for row in range(batch_update.batch_size, len(self.own)):
            self._drop_own(row)
        for lst in (self.specs, self.outputs, self.fed, self.own):
            del lst[batch_update.batch_size:]
        self._focused = sum(s is not None for s in self.specs)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Advance every focused row by its newest output token (or hold it when it has none), then
        bias ``logits`` [B, V] in place; one FocusState launch (and one per row with a large focus of
        its own, once built), no host-device sync."""
        if not self._focused:
            return logits
        any_hold, own = False, []
        for row, output in enumerate(self.outputs):
            if output is None:
                continue
            state, at = self.state, row
            if self.own[row] is not None:
                state, at = self._own_state(row), 0
                if state is None:  # still being built: served unfocused this step
                    continue
            token = self._feed(state, at, row, output)
            if state is not self.state:
                own.append((state, row, token))
                continue
            self._hold[row] = token is None
            any_hold |= token is None
            if token is not None:
                self._tokens[row] = token
        b = len(self.specs)
        hold = self.host_to_device(self._hold[:b]) if any_hold else None
        self.state.apply_(logits, self.host_to_device(self._tokens[:b]), hold=hold)
        for state, row, token in own:
            held = token is None
            state.apply_(logits[row:row + 1], self.host_to_device(np.array([0 if held else token], dtype=np.int32)),
                         hold=self.host_to_device(np.array([held])) if held else None)
        return logits

    def _feed(self, state: FocusState, at: int, row: int, output: Sequence[int]) -> Optional[int]:
        """Bring state row ``at`` (of request row ``row``) up to all but the newest token of ``output``
        and return that token; ``None``: the row holds this step."""
        n, fed = len(output), self.fed[row]
        if n < fed:  # vLLM discarded tokens: start the row over from its list
            state.set_row(at, self.specs[row])
            fed = self.fed[row] = 0
        # Nothing new (a prompt still being read), or an async-scheduling placeholder (-1) whose
        # token is not known yet: the row waits.
        if n == fed or output[-1] < 0:
            if n != fed and not self._warned_placeholder:
                self._warned_placeholder = True
                log.warning("focuskern: output tokens are async-scheduling placeholders (-1); vLLM repairs "
                            "them only for processors passed in logits_processors=[...]; focused rows wait")
            return None
        if n > fed + 1:  # resumed, repaired placeholders, or a focus built meanwhile: all but the newest
            state.advance_row(at, output[fed:-1])
        self.fed[row] = n
        return output[-1]

    def _own_state(self, row: int) -> Optional[FocusState]:
        """Row ``row``'s own state; ``None`` while it is being built, or when building failed (the
        request is then served unfocused)."""
        own = self.own[row]
        if isinstance(own, Future):
            if not own.done():
                return None
            try:
                own = self.own[row] = own.result()
            except Exception as e:  # noqa: BLE001 -- as in set_row: the spec does not fit this model, ...
                log.warning("focuskern: request served without focus: %s: %s", type(e).__name__, str(e)[:400])
                self._assign(row, None, None)
                return None
        return own

    def _assign(self, row: int, spec: Optional[FocusSpec], output) -> None:
        self._drop_own(row)
        if spec is not None and built_off_loop(spec):
            self.set_row(row, None)
            self.own[row], focused = self.build_later(spec), True
        else:
            focused = self.set_row(row, spec)
        self.specs[row] = spec if focused else None
        self.outputs[row] = output if focused else None
        self.fed[row] = 0

    def _drop_own(self, row: int) -> None:
        if isinstance(self.own[row], Future):
            self.own[row].cancel()
        self.own[row] = None

    def _grow(self, rows: int) -> None:
        missing = rows - len(self.specs)
        if missing > 0:
            self.state.resize(rows)
            self.specs += [None] * missing
            self.outputs += [None] * missing
            self.fed += [0] * missing
            self.own += [None] * missing
        if rows > len(self._tokens):  # host staging buffers grow geometrically
            size = max(rows, 2 * len(self._tokens), 16)
            self._tokens = np.resize(self._tokens, size)
            self._hold = np.resize(self._hold, size)
