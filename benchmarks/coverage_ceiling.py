"""How many entities can the seed's decoding write at all?  The coverage ceiling of a case split.

``no_repeat_ngram_size=n`` bans a token that would repeat an n-gram of the sequence, the chat-templated
prompt included; an entity quoted in the prompt is there in its usual tokenization, so its usual
tokenization is banned as soon as its first token is written.  This script asks, per entity, whether
*any* tokenization of *any* text that says it avoids every n-gram of the prompt (the tokens of its own
answer only add bans, so this is an upper bound on what a policy can reach):

* a string says the entity when a form occurs in it with the boundaries of :mod:`focuskern.experiments
  .metrics`: ``as written`` -- the entity's own text or its first letter capitalised, plus a plural
  ``s``/``es``; ``any case`` -- every accepted form (:func:`metrics.accepted_forms`) in lower case,
  first-capital, Title Case, upper case or the entity's own case, plus the plural;
* the first token may begin before the form (``" Paris"``, ``"(P"``: its bytes before the form end in
  no letter or digit, none needed before a CJK character), the last may run past it (``"s,"``; no
  letter or digit may follow, anything after a CJK character); in between, tokens are exact pieces of
  the form, in any split the vocabulary (as bytes, :func:`focuskern.text.token_bytes`) allows;
* the n-grams *inside* that chain must not occur in the prompt.  The tokens around the chain are taken
  as free (a token before it, a punctuation or space token after it: hundreds to choose from).

Usage: ``PYTHONPATH=. python benchmarks/coverage_ceiling.py --cases en [--splits tune report]
[--out FILE.json]``.
"""
from __future__ import annotations

import argparse
import collections
import json
import re

from focuskern.experiments.cases import load_cases
from focuskern.experiments.generation import Decoding
from focuskern.experiments.metrics import _WORD, accepted_forms, forbidden_entities, is_cjk
from focuskern.experiments.models import DEFAULT_GGUF, default_model_dir
from focuskern.experiments.prompts import chat_inputs
from focuskern.text import token_bytes

_WORD_RE = re.compile(_WORD)


def _free_edge(piece: bytes, at_end: bool) -> bool:
    """May ``piece`` (bytes of a token outside the form) touch the form: its character next to the form
    is no letter or digit of a spaced script (empty: yes)."""
    text = piece.decode("utf-8", "replace")
    if not text:
        return True
    return _WORD_RE.fullmatch(text[0] if at_end else text[-1]) is None


class VocabPieces:
    """Every token's bytes indexed by the piece of text it can hold: whole, as a suffix (a start that
    begins before the form), as a prefix (an end that runs past it), as an infix (both)."""

    def __init__(self, pieces: list[bytes]):
        self.exact, self.suffix, self.prefix, self.infix = (collections.defaultdict(list) for _ in range(4))
        for t, b in enumerate(pieces):
            if not b:
                continue
            self.exact[b].append(t)
            n = len(b)
            for p in range(1, n):
                self.suffix[b[p:]].append((t, b[:p]))
                self.prefix[b[:p]].append((t, b[p:]))
                for q in range(p + 1, n):
                    self.infix[b[p:q]].append((t, b[:p], b[q:]))


def writable(target: str, vocab: VocabPieces, banned: set, n: int) -> bool:
    """Can ``target`` (a form as it must appear) be written by a token chain with no n-gram in
    ``banned``?  Search over (bytes written, last n-1 tokens)."""
    data = target.encode()
    free_before, free_after = is_cjk(target[0]), is_cjk(target[-1])
    ok_before = lambda x: free_before or _free_edge(x, False)  # noqa: E731
    ok_after = lambda y: free_after or _free_edge(y, True)  # noqa: E731
    L = len(data)
    if any(ok_before(x) and ok_after(y) for _, x, y in vocab.infix.get(data, ())):
        return True
    if any(ok_before(x) for _, x in vocab.suffix.get(data, ())) or data in vocab.exact \
            or any(ok_after(y) for _, y in vocab.prefix.get(data, ())):
        return True
    frontier = set()
    for j in range(1, L):
        head = data[:j]
        frontier |= {(j, (t,)) for t in vocab.exact.get(head, ())}
        frontier |= {(j, (t,)) for t, x in vocab.suffix.get(head, ()) if ok_before(x)}
    seen = set(frontier)
    while frontier:
        nxt = set()
        for i, last in frontier:
            rest = data[i:]
            ends = list(vocab.exact.get(rest, ())) + [t for t, y in vocab.prefix.get(rest, ()) if ok_after(y)]
            if any(_allowed(last, t, banned, n) for t in ends):
                return True
            for j in range(i + 1, L):
                for t in vocab.exact.get(data[i:j], ()):
                    if _allowed(last, t, banned, n):
                        state = (j, (last + (t,))[-(n - 1):] if n > 1 else ())
                        if state not in seen:
                            seen.add(state)
                            nxt.add(state)
        frontier = nxt
    return False


def _allowed(last: tuple, t: int, banned: set, n: int) -> bool:
    """Does writing ``t`` after ``last`` (the chain's previous tokens) avoid every banned n-gram?"""
    gram = last[-(n - 1):] + (t,) if n > 1 else (t,)
    return len(gram) < n or gram not in banned


def targets(entity: str, as_written: bool) -> set[str]:
    """The strings whose occurrence says ``entity`` (module docstring), plural included."""
    e = entity.strip()
    if as_written:
        bases = {e, e[:1].upper() + e[1:]}
    else:
        bases = {e}
        for f in accepted_forms(e):
            bases |= {f, f[:1].upper() + f[1:], f.title(), f.upper()}
    plural = lambda f: () if is_cjk(f[-1]) else (f + "s", f + "es")  # noqa: E731
    return bases | {p for f in bases for p in plural(f)}


def ceiling(cases: list[dict], tok, vocab: VocabPieces, n: int) -> dict:
    """Per entity: writable as written / in any case, and forbidden in the canonical tokenization."""
    rows = []
    for case in cases:
        prompt = chat_inputs(tok, [case["prompt"]])["input_ids"][0].tolist()
        banned = {tuple(prompt[i:i + n]) for i in range(len(prompt) - n + 1)}
        canonical = set(forbidden_entities(tok, prompt, case["entities"], n))
        for e in case["entities"]:
            written = any(writable(t, vocab, banned, n) for t in targets(e, True))
            anycase = written or any(writable(t, vocab, banned, n) for t in targets(e, False))
            rows.append({"case": case["id"], "entity": e, "as_written": written, "any_case": anycase,
                         "canonical_forbidden": e in canonical})
    total = len(rows)
    return {"entities": total, "writable_as_written": sum(r["as_written"] for r in rows),
            "writable_any_case": sum(r["any_case"] for r in rows),
            "canonical_allowed": sum(not r["canonical_forbidden"] for r in rows), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="en")
    ap.add_argument("--splits", nargs="+", default=["tune", "report"])
    ap.add_argument("--no-repeat-ngram-size", type=int, default=Decoding().no_repeat_ngram_size)
    ap.add_argument("--out", default=None, help="write every entity's verdict to this JSON file")
    args = ap.parse_args()
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(default_model_dir(), gguf_file=DEFAULT_GGUF)  # the embedded model's
    tok.pad_token = tok.pad_token or tok.eos_token
    vocab = VocabPieces(token_bytes(tok, len(tok)))
    result = {"cases": args.cases, "no_repeat_ngram_size": args.no_repeat_ngram_size}
    for split in args.splits:
        r = ceiling(load_cases(split, args.cases), tok, vocab, args.no_repeat_ngram_size)
        result[split] = r
        print(f"{args.cases} {split}: {r['entities']} entities; writable in any tokenization: as written "
              f"{r['writable_as_written']} ({r['writable_as_written'] / r['entities']:.1%}), any case "
              f"{r['writable_any_case']} ({r['writable_any_case'] / r['entities']:.1%}); canonical "
              f"tokenization allowed {r['canonical_allowed']}", flush=True)
        for row in r["rows"]:
            if not row["as_written"]:
                print("  not writable as written:", row["case"], repr(row["entity"]),
                      "(any case: yes)" if row["any_case"] else "")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
