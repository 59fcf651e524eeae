"""The text columns of ``focuskern eval coverage`` (issue 22): coverage as written, spaces put into
CJK text, keyword dumps, punctuation runs and doubled words -- per row, next to the baseline's, so
that "no more than the baseline" can be read off.  Per-output scores: :func:`.metrics.score_output`."""
from __future__ import annotations


def _ratio(outs: list[dict], key: str) -> float:
    asked = sum(o["n_entities"] for o in outs)
    return sum(o[key] for o in outs) / asked if asked else float("nan")


def text_summary(greedy: list[dict], sampled: list[dict]) -> dict:
    """Row totals: ``written_greedy`` / ``written_sampled`` = entities said as written / asked;
    ``cjk_spaces`` / ``cjk_inner_spaces`` = space runs next to / between CJK characters, over all
    outputs; ``dump_outputs`` / ``punct_outputs`` = outputs with a keyword dump / punctuation run."""
    every = greedy + sampled
    return {"written_greedy": _ratio(greedy, "said_as_written"), "written_sampled": _ratio(sampled, "said_as_written"),
            "cjk_spaces": sum(o["cjk_spaces"] for o in every),
            "cjk_inner_spaces": sum(o["cjk_inner_spaces"] for o in every),
            "dump_outputs": sum(bool(o["dumps"]) for o in every),
            "punct_outputs": sum(bool(o["punct_runs"]) for o in every)}


def _pct(x: float) -> str:
    return "–" if x != x else f"{x:.1%}"


def text_table(summary: list[dict]) -> str:
    """Coverage any case and as written, and the text faults, one row per policy and strength."""
    lines = ["| policy | strength | coverage greedy / sampled | as written greedy / sampled | spaces next to CJK "
             "(between CJK) | outputs with a keyword dump | with a punctuation run | doubled words "
             "| degenerate outputs |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in summary:
        lines.append(f"| {r['policy']} | {r['strength']:g} | {_pct(r['greedy_coverage'])} / "
                     f"{_pct(r['sampled_coverage'])} | {_pct(r['written_greedy'])} / {_pct(r['written_sampled'])} "
                     f"| {r['cjk_spaces']} ({r['cjk_inner_spaces']}) | {r['dump_outputs']} | {r['punct_outputs']} "
                     f"| {r['doubled_words']} | {r['degenerate_outputs']} of {r['outputs']} |")
    lines.append("\n*As written*: the entity's own case (a lower-case entity may start with a capital). *Keyword "
                 "dump*: 3+ entity occurrences with no words between them (spaces, nothing, or several marks; a "
                 "list \"A, B, C\" is not one). *Punctuation run*: 3+ "
                 "clause marks in a row (not an ellipsis of dots). Degenerate = 3+ double-space gaps, a glued "
                 "piece, a keyword dump or a punctuation run (metrics.score_output).")
    return "\n".join(lines)
