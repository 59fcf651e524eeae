"""A tokenizer's vocabulary as text: every token's bytes (:class:`TokenTable`, built once per tokenizer and
cached) and a hash index that finds every token spelled by a piece of text (:class:`VocabIndex`).

Token bytes come from the tokenizer's own data (``convert_ids_to_tokens``):

* byte-level BPE (GPT-2, Llama 3, Qwen, SmolLM2): each character of a token is one byte through the
  inverse of GPT-2's ``bytes_to_unicode`` map (``Ġ`` = space);
* SentencePiece: ``▁`` is a space, ``<0xNN>`` (byte fallback) is the byte ``NN``;
* raw vocabularies: the token's UTF-8 text.

Special tokens and ids past the tokenizer have no bytes: such a token ``t`` is the one opaque symbol
``SYM_OPAQUE + t`` (a token-id entity may still hold it; no text pattern does).  A tokenizer without ``convert_ids_to_tokens``
is read through ``decode([t])`` (none either: its tokens have no bytes).  Without a tokenizer every token ``t`` is the one symbol
``SYM_OPAQUE + t`` (:func:`opaque_table`), so token-id entities compile to a token-level automaton.
"""
from __future__ import annotations

import json
import re
import weakref
from functools import lru_cache

import numpy as np
import torch

from .ops.layout import BYTE_CLASS, SYM_OPAQUE

WHITESPACE = frozenset(b" \t\n\r\f\v")
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode``: printable bytes map to themselves, the others to
    ``chr(256 + i)`` in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in chars:
            chars[b], extra = chr(256 + extra), extra + 1
    return {c: b for b, c in chars.items()}


def _component_types(tokenizer) -> tuple[set[str], bool]:
    """(types of the fast tokenizer's decoder and pre-tokenizer components, byte fallback on)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return ({"ByteLevel"} if hasattr(tokenizer, "byte_decoder") else set()), False
    spec = json.loads(backend.to_str())
    types: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("type"), str):
                types.add(node["type"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk([spec.get("decoder"), spec.get("pre_tokenizer")])
    return types, bool((spec.get("model") or {}).get("byte_fallback")) or "ByteFallback" in types


def token_bytes(tokenizer, vocab_size: int) -> list[bytes]:
    """The bytes of tokens ``0 .. vocab_size - 1`` (empty: special, or past the tokenizer)."""
    n = min(vocab_size, len(tokenizer)) if hasattr(tokenizer, "__len__") else vocab_size
    special = set(getattr(tokenizer, "all_special_ids", ()) or ())
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    special |= {t for t, token in added.items() if getattr(token, "special", False)}
    raw = {t: token.content.encode() for t, token in added.items() if t not in special}
    if not hasattr(tokenizer, "convert_ids_to_tokens"):
        decode = getattr(tokenizer, "decode", lambda ids: "")
        pieces = [b"" if t in special else decode([t]).encode() for t in range(n)]
        return pieces + [b""] * (vocab_size - n)
    types, fallback = _component_types(tokenizer)
    byte_level = "ByteLevel" in types
    decoder = byte_decoder()
    out = []
    for t, piece in enumerate(tokenizer.convert_ids_to_tokens(list(range(n)))):
        if piece is None or t in special:
            out.append(b"")
        elif t in raw:
            out.append(raw[t])
        elif fallback and (m := _BYTE_TOKEN.fullmatch(piece)):
            out.append(bytes([int(m.group(1), 16)]))
        elif byte_level and all(c in decoder for c in piece):
            out.append(bytes(decoder[c] for c in piece))
        else:
            out.append(piece.replace("\u2581", " ").encode())
    return out + [b""] * (vocab_size - n)


class TokenTable:
    """Token ``t``'s symbols ``sym[off[t]:off[t + 1]]`` (bytes, or one opaque symbol), the byte
    classes, and the vocabulary index for the compiler; :meth:`tensors` gives the op's arguments."""

    def __init__(self, off: np.ndarray, sym: np.ndarray, opaque: bool):
        self.off, self.sym, self.opaque = off.astype(np.int64), sym.astype(np.int64), opaque
        self.vocab_size = len(off) - 1
        lengths = np.diff(self.off)
        self.max_len = int(lengths.max(initial=0))
        self._tensors: dict[torch.device, tuple[torch.Tensor, ...]] = {}
        self._index = None
        self._native_vocab = None

    @classmethod
    def from_bytes(cls, pieces: list[bytes]) -> "TokenTable":
        """Token ``t`` = the bytes ``pieces[t]``, or the opaque symbol ``SYM_OPAQUE + t`` where empty."""
        lengths = np.array([max(len(p), 1) for p in pieces], dtype=np.int64)
        off = np.zeros(len(pieces) + 1, dtype=np.int64)
        np.cumsum(lengths, out=off[1:])
        sym = np.empty(int(off[-1]), dtype=np.int64)
        data = np.frombuffer(b"".join(pieces), dtype=np.uint8)
        empty = np.flatnonzero(np.array([not p for p in pieces], dtype=bool))
        is_byte = np.ones(len(sym), dtype=bool)
        is_byte[off[empty]] = False
        sym[is_byte] = data
        sym[off[empty]] = SYM_OPAQUE + empty
        return cls(off, sym, opaque=False)

    def units(self, token: int) -> np.ndarray:
        return self.sym[self.off[token]:self.off[token + 1]]

    def tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tok_off [V + 1], tok_sym [T], byte_class [256]) int32 on ``device`` (cached)."""
        if device not in self._tensors:
            sym = self.sym if len(self.sym) else np.zeros(1, np.int64)  # never empty: kernels take its pointer
            self._tensors[device] = tuple(torch.tensor(np.asarray(a), dtype=torch.int32, device=device)
                                          for a in (self.off, sym, BYTE_CLASS))
        return self._tensors[device]

    def native_vocab(self, ext):
        """The C++ compiler's trie of :attr:`index`'s tokens (``ext``: ``focuskern._C``), for token edges;
        built on first use and kept: it costs what the vocabulary does (16 ms for 49k tokens)."""
        if self._native_vocab is None:
            arrays = (self.off, self.sym, self.index.tokens)
            self._native_vocab = ext.vocab_trie(*(torch.from_numpy(np.ascontiguousarray(a, np.int64)) for a in arrays))
        return self._native_vocab

    @property
    def index(self) -> "VocabIndex":
        if self._index is None:
            self._index = VocabIndex(self)
        return self._index


_TABLES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def token_table(tokenizer, vocab_size: int) -> TokenTable:
    """The :class:`TokenTable` of ``tokenizer`` (``None``: :func:`opaque_table`), cached per tokenizer."""
    if tokenizer is None:
        return opaque_table(vocab_size)
    try:
        per = _TABLES.setdefault(tokenizer, {})
    except TypeError:  # not weak-referenceable: build, do not cache
        per = {}
    if vocab_size not in per:
        per[vocab_size] = TokenTable.from_bytes(token_bytes(tokenizer, vocab_size))
    return per[vocab_size]


@lru_cache(maxsize=8)
def opaque_table(vocab_size: int) -> TokenTable:
    """Token ``t`` = the one symbol ``SYM_OPAQUE + t``."""
    return TokenTable(np.arange(vocab_size + 1), SYM_OPAQUE + np.arange(vocab_size), opaque=True)


# Polynomial hash of a symbol run, mod 2^64: h(s[i:j]) = sum_k (s[k] + 1) * P^(k - i).  Prefix sums
# S[j] = sum_{k<j} (s[k] + 1) P^k give h(s[i:j]) = (S[j] - S[i]) * P^-i (P odd, so invertible mod 2^64).
P = np.uint64(0x9E3779B97F4A7C15)
P_INV = np.uint64(pow(int(P), -1, 2**64))


_POWERS: dict[int, np.ndarray] = {}


def powers(base: np.uint64, n: int) -> np.ndarray:
    """``base ** k`` mod 2^64 for ``k = 0 .. n - 1`` (cached, grown as needed)."""
    have = _POWERS.get(int(base))
    if have is None or len(have) < n:
        out = np.full(max(n, 1024), base, dtype=np.uint64)
        out[0] = 1
        with np.errstate(over="ignore"):
            have = _POWERS[int(base)] = np.cumprod(out, dtype=np.uint64)
    return have[:n]


def run_hash(prefix_i: np.ndarray, prefix_j: np.ndarray, i: np.ndarray) -> np.ndarray:
    """The hash of the run ``s[i:j]`` from the prefix sums ``S[i]``, ``S[j]``: ``(S[j] - S[i]) * P^-i``."""
    with np.errstate(over="ignore"):
        return (prefix_j - prefix_i) * powers(P_INV, int(i.max(initial=0)) + 1)[i]


class RunHashes:
    """Hashes of any run ``s[i:j]`` of a flat symbol array ``s`` in O(1) after O(len(s)) numpy work."""

    def __init__(self, sym: np.ndarray):
        self.prefix = np.zeros(len(sym) + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            np.cumsum(unit_values(sym) * powers(P, len(sym)), dtype=np.uint64, out=self.prefix[1:])

    def __call__(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return run_hash(self.prefix[i], self.prefix[j], i)


def unit_values(sym: np.ndarray) -> np.ndarray:
    """What a symbol adds to a hash (times its power of ``P``): ``sym + 1``, never 0."""
    return sym.astype(np.uint64) + np.uint64(1)


class HashSet:
    """Distinct uint64 ``keys`` in an open-addressing table (linear probing, load <= 1/4), so a batch of
    lookups costs a few gathers instead of a binary search each."""

    def __init__(self, keys: np.ndarray):
        self.keys = keys
        self.bits = max(int(4 * len(keys)).bit_length(), 4)
        size = 1 << self.bits
        self.slot_of = np.full(size, -1, dtype=np.int64)  # index into keys, -1 = empty
        pending = np.arange(len(keys))
        pos = self._home(keys)
        while pending.size:  # place each key at its first free position from its home
            free = self.slot_of[pos] < 0
            first = np.zeros(len(pos), bool)
            _, at = np.unique(pos[free], return_index=True)
            first[np.flatnonzero(free)[at]] = True  # one key per free position per round
            self.slot_of[pos[first]] = pending[first]
            pending, pos = pending[~first], (pos[~first] + 1) & (size - 1)

    def _home(self, h: np.ndarray) -> np.ndarray:
        """The top ``bits`` of ``(h ^ h >> 31) * C`` (a run of one symbol hashes to a small number)."""
        with np.errstate(over="ignore"):
            mixed = (h ^ (h >> np.uint64(31))) * np.uint64(0xBF58476D1CE4E5B9)
        return (mixed >> np.uint64(64 - self.bits)).astype(np.int64)

    def find(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found, index into ``keys``) of each hash ``h``."""
        found = np.zeros(len(h), bool)
        index = np.zeros(len(h), dtype=np.int64)
        todo = np.arange(len(h))
        pos = self._home(h)
        mask = (1 << self.bits) - 1
        while todo.size:
            k = self.slot_of[pos]
            hit = k >= 0
            hit[hit] = self.keys[k[hit]] == h[todo[hit]]
            found[todo[hit]], index[todo[hit]] = True, k[hit]
            go = (k >= 0) & ~hit
            todo, pos = todo[go], (pos[go] + 1) & mask
        return found, index


class VocabIndex:
    """The hashes of every prefix and of every suffix of every token, sorted, each with the tokens (not
    whitespace-only, not empty) spelled exactly by it: :meth:`spelled` finds all tokens a run of text
    starts with (growing the run while it is a token prefix); ``suffixes`` serve a search that grows a
    run backwards while it is a token suffix (:func:`focuskern.automaton.token_edges`).

    Hash collisions (64 bits) are not checked: with Q queries and K keys a false hit has probability
    about Q * K / 2^64 (1e-8 for 1e7 queries against 1e6 keys)."""

    def __init__(self, table: TokenTable):
        off, sym = table.off, table.sym
        self.hash = RunHashes(sym)
        tok = np.repeat(np.arange(table.vocab_size), np.diff(off))
        pos = np.arange(len(sym))
        full = self.hash(off[:-1], off[1:])
        visible = np.bincount(tok, weights=~np.isin(sym, list(WHITESPACE)), minlength=table.vocab_size)
        eligible = np.flatnonzero(visible > 0)  # not empty, not whitespace-only
        self.tokens = eligible[np.argsort(full[eligible], kind="stable")]  # eligible tokens sorted by hash
        self._token_keys = full[self.tokens]
        self.prefixes = self._keys(self.hash(off[tok], pos + 1))
        self.suffixes = self._keys(self.hash(pos, off[tok + 1]))
        self.max_len = table.max_len

    def _keys(self, hashes: np.ndarray) -> tuple["HashSet", np.ndarray, np.ndarray]:
        """(distinct hashes, per hash the range of ``self.tokens`` spelled by it)."""
        keys = HashSet(np.unique(hashes))
        return (keys, np.searchsorted(self._token_keys, keys.keys, side="left"),
                np.searchsorted(self._token_keys, keys.keys, side="right"))

    @staticmethod
    def find(keys, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found, index of ``h`` among the distinct hashes ``keys``)."""
        return keys[0].find(h)

    def tokens_of(self, keys, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(p, token): every token spelled by key ``i[p]``."""
        lo, count = keys[1][i], keys[2][i] - keys[1][i]
        p = np.repeat(np.arange(len(i)), count)
        return p, self.tokens[lo[p] + np.arange(len(p)) - np.repeat(np.cumsum(count) - count, count)]

    def spelled(self, sym: np.ndarray, start: np.ndarray, limit: np.ndarray) -> tuple[np.ndarray, ...]:
        """All ``(q, length, token)`` with ``sym[start[q]:start[q] + length] == token``'s symbols,
        ``1 <= length <= limit[q]``."""
        hashes = RunHashes(sym)
        q = np.arange(len(start))
        qs, ls, ts = [], [], []
        for length in range(1, self.max_len + 1):
            q = q[limit[q] >= length]
            found, i = self.find(self.prefixes, hashes(start[q], start[q] + length))
            q, i = q[found], i[found]
            if not q.size:
                break
            p, token = self.tokens_of(self.prefixes, i)
            qs.append(q[p])
            ls.append(np.full(len(p), length))
            ts.append(token)
        empty = [np.zeros(0, np.int64)]
        return tuple(np.concatenate(empty + parts) for parts in (qs, ls, ts))
