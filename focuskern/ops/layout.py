"""The one definition of the compiled-program tables' column layout (Python, Triton and C++/CUDA).

Every table is a 2-D int32 (or float32) tensor whose columns are named here.  Python and Triton import
the indices from this module; ``csrc/`` includes ``focus_layout.h``, which this file writes
(``python focuskern/ops/layout.py <folder>``, run by ``setup.py`` and ``make check-cuda``), so no index
is ever typed twice.  The file has no imports from the package, so the build can run it standalone.

Tables of a :class:`~focuskern.state.FocusState` (all programs concatenated, see
:mod:`focuskern.automaton` for what a program is; the design: ``docs/text-tracking.md``):

* ``prog_f32`` [P, F.WIDTH]: a program's numbers (bias, continuation bias, blend, decay triple, the
  budget policy: token budget (0 = none), slack, force, end-of-text damping).
* ``prog_i32`` [P, I.WIDTH]: where its nodes, slots and entity lists start, its flags, its number of
  entities and up to ``MAX_EOS`` end-of-text tokens (-1 = none).
* ``node`` [N, N_.WIDTH]: per symbol-trie node its closure range, the entity lists of the entities
  passing through it and of those it completes, its fail link, its children (the contiguous node range
  ``[CHILD_LO, CHILD_HI)``, sorted by ``SYM``) and ``SYM``, the symbol on the edge into it.
* ``slot`` [S, S_.WIDTH]: per distinct pushed token of a program the token and, per push context
  ``pc``, the list of entities it starts (``FIRST_LO0 + 2 * pc``, ``FIRST_HI0 + 2 * pc``).
* ``closure`` [E, C.WIDTH]: per closure entry (a possible next token of a partial match) its slot and
  the node it leads to; a node's entries are sorted by slot, deepest match first within a slot.
* ``ents`` [M]: the entity lists, program-local entity ids.

Per tokenizer (:class:`focuskern.text.TokenTable`): ``tok_off`` [V + 1], ``tok_sym`` [T] (token ``t``'s
symbols are ``tok_sym[tok_off[t]:tok_off[t + 1]]``) and ``byte_class`` [256] (``BYTE_CLASS``).

Symbols: ``0..255`` bytes, ``SYM_WORD_START`` (B) and ``SYM_DIGITS_END`` (D) inserted by the byte walk,
``SYM_OPAQUE + t`` the one symbol of token ``t`` of a tokenizer-less state.  A row's node word is
``local_node | (ctx << CTX_SHIFT)`` with the ``CTX_*`` bits; a fresh row's ctx is ``CTX_INITIAL``.
"""
from __future__ import annotations

import os
import sys


class Columns:
    """Named column indices ``0 .. WIDTH-1`` of one table; ``prefix`` names them in C++."""

    def __init__(self, prefix: str, enum: str, *names: str):
        self.prefix, self.enum, self.names = prefix, enum, names
        for i, name in enumerate(names):
            setattr(self, name, i)
        self.WIDTH = len(names)


F = Columns("F_", "ProgF32", "BIAS", "CONT", "ALPHA", "KIND", "HORIZON", "FLOOR",
            "BUDGET", "SLACK", "FORCE", "EOS_DAMP")
MAX_EOS = 4  # end-of-text ids per program
N_PUSH_CONTEXTS = 4  # pc = (ctx & CTX_SPACED ? 2 : 0) | (ctx & CTX_SENTENCE ? 1 : 0)
I = Columns("I_", "ProgI32", "NODE_BASE", "SLOT_BASE", "N_SLOTS", "ENT_BASE", "ENT_COUNT",  # noqa: E741
            "PHRASE", "ONCE", "STARTS_IN_MATCH", "N_ENTITIES", *(f"EOS{i}" for i in range(MAX_EOS)))
N_ = Columns("N_", "NodeCol", "CLO_LO", "CLO_HI", "THROUGH_LO", "THROUGH_HI", "OUT_LO", "OUT_HI", "FAIL",
             "CHILD_LO", "CHILD_HI", "SYM")
S_ = Columns("S_", "SlotCol", "TOKEN", *(f"FIRST_{b}{pc}" for pc in range(N_PUSH_CONTEXTS) for b in ("LO", "HI")))
C = Columns("C_", "ClosureCol", "SLOT", "CHILD")
TABLES = (F, I, N_, S_, C)

# Symbols (docs/text-tracking.md section 1).
SYM_WORD_START = 256  # B: a word starts (a BC_WORD byte not after one)
SYM_DIGITS_END = 257  # D: a run of digits ended (a class-bearing non-digit byte after a digit)
SYM_OPAQUE = 1024  # token t of a tokenizer-less state is the one symbol SYM_OPAQUE + t

# Byte classes (flags of BYTE_CLASS[b]).
BC_WORD = 1  # ASCII letters and digits, UTF-8 lead bytes 0xC3..0xDF
BC_DIGIT = 2  # 0-9
BC_CONT = 4  # UTF-8 continuation bytes 0x80..0xBF: no class event
BC_OPEN = 8  # whitespace and ( [ { " ' `: the next entity is written unspaced
BC_SENT_END = 16  # . ! ? newline: a sentence start is pending
BC_SENT_KEEP = 32  # whitespace and ( [ { " ' `: a pending sentence start survives them

# Row context bits, packed above the node: node_word = local_node | (ctx << CTX_SHIFT).
CTX_PREV_WORD = 1
CTX_PREV_DIGIT = 2
CTX_SPACED = 4  # an entity start needs a leading space here
CTX_SENTENCE = 8  # a sentence start is pending
CTX_INITIAL = CTX_SENTENCE  # a fresh row: the start of the answer
CTX_SHIFT = 27
NODE_MASK = (1 << CTX_SHIFT) - 1  # a program holds at most NODE_MASK + 1 nodes

_WHITESPACE, _OPENERS = b" \t\n\r\f\v", b"([{\"'`"


def _byte_class(b: int) -> int:
    """The flags of byte ``b`` (docs/text-tracking.md section 1)."""
    c = 0
    if chr(b).isascii() and chr(b).isalnum() or 0xC3 <= b <= 0xDF:
        c |= BC_WORD
    if 0x30 <= b <= 0x39:
        c |= BC_DIGIT
    if 0x80 <= b <= 0xBF:
        c |= BC_CONT
    if b in _WHITESPACE or b in _OPENERS:
        c |= BC_OPEN | BC_SENT_KEEP
    if b in b".!?\n":
        c |= BC_SENT_END
    return c


BYTE_CLASS = tuple(_byte_class(b) for b in range(256))

# Constants of the C++ header (focus_layout.h), in this order.
CONSTANTS = ("SYM_WORD_START", "SYM_DIGITS_END", "SYM_OPAQUE", "BC_WORD", "BC_DIGIT", "BC_CONT", "BC_OPEN",
             "BC_SENT_END", "BC_SENT_KEEP", "CTX_PREV_WORD", "CTX_PREV_DIGIT", "CTX_SPACED", "CTX_SENTENCE",
             "CTX_INITIAL", "CTX_SHIFT", "NODE_MASK", "MAX_EOS", "N_PUSH_CONTEXTS")

# Arguments of ``focuskern::focus_state_<backend>_`` (every backend; the C++ side reads it from the header).
# ``limits`` = (max_slots, max_closure, max_ents, max_out, max_token_len, max_depth): the largest
# program's sizes, the longest token's symbol count and the deepest trie node, which the torch backend
# pads and loops to (the compiled kernels may ignore them).
FOCUS_STATE_ARGS = (
    "(Tensor(a!) logits, Tensor? last_tokens, Tensor prog, Tensor(b!) node, Tensor(c!) sat, Tensor(d!) step, "
    "Tensor prog_f32, Tensor prog_i32, Tensor node_table, Tensor slot_table, Tensor closure, Tensor ents, "
    "Tensor tok_off, Tensor tok_sym, Tensor byte_class, int[] limits, bool blend) -> ()")

HEADER = "focus_layout.h"


def c_header() -> str:
    """The C++ enums of every table's columns and the constants above."""
    lines = ["// Generated by focuskern/ops/layout.py (the one definition of the table layout): do not edit.",
             "#pragma once", "", "#include <cstdint>", "", "namespace focuskern {", ""]
    for table in TABLES:
        cols = ", ".join(f"{table.prefix}{name} = {i}" for i, name in enumerate(table.names))
        lines.append(f"enum {table.enum} {{ {cols}, {table.prefix}WIDTH = {table.WIDTH} }};")
    lines += [""] + [f"constexpr int32_t {name} = {globals()[name]};" for name in CONSTANTS]
    lines += ["", f'constexpr const char* kFocusStateArgs = "{FOCUS_STATE_ARGS}";']
    return "\n".join(lines + ["", "}  // namespace focuskern", ""])


def write_header(folder: str) -> str:
    """Write ``focus_layout.h`` into ``folder`` (only if it changed, so builds stay incremental)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, HEADER)
    text = c_header()
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as f:
            f.write(text)
    return path


if __name__ == "__main__":
    print(write_header(sys.argv[1] if len(sys.argv) > 1 else "build/generated"))
