"""Case sets of ``focuskern eval coverage``: the built-in ones (``en``: English, the default; ``zh``:
Chinese; ``quoted``: summaries whose entities are quoted from the given text) or a user's file.

A file is JSON -- an object with a ``cases`` list (the layout of ``coverage_cases.json``) or a bare
list -- or JSONL, one case per line.  A case: ``id`` (unique), ``prompt``, ``entities`` (non-empty
strings), ``split`` (``tune`` or ``report``: fixed in the file, decided before any tuning), optionally
``kind`` (a label; default ``"-"``).
"""
from __future__ import annotations

import json
import os

BUILTIN = {"en": "coverage_cases.json", "zh": "coverage_cases_zh.json", "quoted": "coverage_cases_quoted.json"}
SPLITS = ("tune", "report", "all")


def cases_path(cases: str) -> str:
    """The file of a built-in set name, else ``cases`` itself (a path)."""
    if cases in BUILTIN:
        return os.path.join(os.path.dirname(__file__), BUILTIN[cases])
    if not os.path.isfile(cases):
        raise ValueError(f"cases must be one of {tuple(BUILTIN)} or a JSON/JSONL file, got {cases!r}")
    return cases


def _parse(text: str, path: str) -> list:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        try:  # JSONL: one case per non-empty line
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as err:
            raise ValueError(f"cases: {path} is neither JSON nor JSONL ({err})") from None
    cases = doc.get("cases") if isinstance(doc, dict) else doc
    if not isinstance(cases, list):
        raise ValueError(f"cases: {path} holds no list of cases (a list, or an object with 'cases')")
    return cases


def _check(case, i: int, path: str, ids: set) -> dict:
    where = f"cases: {path}, case {i}"
    if not isinstance(case, dict):
        raise ValueError(f"{where}: expected an object, got {type(case).__name__}")
    for key in ("id", "prompt", "entities", "split"):
        if key not in case:
            raise ValueError(f"{where}: missing {key!r}")
    if not isinstance(case["id"], str) or not case["id"] or case["id"] in ids:
        raise ValueError(f"{where}: id must be a non-empty string, unique in the file, got {case['id']!r}")
    if not isinstance(case["prompt"], str) or not case["prompt"].strip():
        raise ValueError(f"{where} ({case['id']}): prompt must be a non-empty string")
    ents = case["entities"]
    if not isinstance(ents, list) or not ents or not all(isinstance(e, str) and e.strip() for e in ents):
        raise ValueError(f"{where} ({case['id']}): entities must be a non-empty list of non-empty strings")
    if case["split"] not in ("tune", "report"):
        raise ValueError(f"{where} ({case['id']}): split must be 'tune' or 'report', got {case['split']!r}")
    ids.add(case["id"])
    return {"kind": "-", **case}


def read_cases(cases: str = "en") -> list[dict]:
    """Every case of a set (name or path), validated, in file order."""
    path = cases_path(cases)
    with open(path, encoding="utf-8") as f:
        raw = _parse(f.read(), path)
    ids: set = set()
    checked = [_check(c, i, cases, ids) for i, c in enumerate(raw)]
    if not checked:
        raise ValueError(f"cases: {cases} holds no cases")
    return checked


def load_cases(split: str = "all", cases: str = "en") -> list[dict]:
    """The cases of ``split`` (``tune``, ``report`` or ``all``) of a set, in file order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return [c for c in read_cases(cases) if split == "all" or c["split"] == split]
