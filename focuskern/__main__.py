"""focuskern command line: ``focuskern demo [--attention]`` (``python -m focuskern demo``),
``focuskern eval lost-in-middle``, ``focuskern eval coverage``, ``focuskern eval attention-keywords``,
``focuskern inspect``, ``focuskern backends``."""
from __future__ import annotations

import argparse
import sys

from .metadata import result_name

# Attention focus of `eval lost-in-middle` and `demo --attention`: the least harmful of a sweep on
# seed 1000 (benchmarks/results/lost_in_middle_sweep_hex8_smollm2_cpu.md), not on the reported seeds.
# Results go to a folder in the current directory (never into the installed package).
DEFAULT_OUT = "focuskern-results"
DEFAULT_BETA = 0.5
DEFAULT_LAYERS = "all"
DEFAULT_SCOPE = "all"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="focuskern", description="Steer generation toward key entities.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("backends", help="list kernel backends and why any is unavailable")
    demo = sub.add_parser("demo", help="seed 000's experiment on the embedded default model")
    demo.add_argument("--model", help="HF model folder/id or a .gguf path (default: embedded SmolLM2-135M-Instruct)")
    demo.add_argument("--keywords", nargs="+", help="entities to focus on (default: the seed's five)")
    demo.add_argument("--prompt", help="user prompt (default: the seed's English prompt)")
    demo.add_argument("--samples", type=int, default=10, help="sampled generations per row")
    demo.add_argument("--max-new-tokens", type=int, default=200)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--device", default="cpu")
    demo.add_argument("--json", action="store_true", help="print the full results as JSON")
    demo.add_argument("--rows", nargs="+", help="only the rows whose label contains one of these words "
                      "(e.g. baseline defaults; fluency is relative to the first row run)")
    demo.add_argument("--attention", action="store_true",
                      help="instead: one key-value retrieval case without and with attention focus")
    demo.add_argument("--attention-beta", type=float, default=DEFAULT_BETA, help="with --attention: the boost")
    demo.add_argument("--attention-layers", default=DEFAULT_LAYERS, help="with --attention: 'all' or '8-21,25'")
    demo.add_argument("--attention-scope", choices=["all", "data"], default=DEFAULT_SCOPE,
                      help="with --attention: which occurrences of the key get the boost")
    demo.add_argument("--ids", choices=["uuid", "hex8"], default="hex8", help="with --attention: id format")
    ins = sub.add_parser("inspect", help="pictures of where the model looks (attention readout, no maps)")
    ins.add_argument("--prompt", required=True)
    ins.add_argument("--entities", nargs="+", required=True)
    ins.add_argument("--model", help="HF model folder/id or a .gguf path (default: embedded SmolLM2-135M-Instruct)")
    ins.add_argument("--target", type=float, default=0.3, help="target mass on the entities for the focused run")
    ins.add_argument("--max-new-tokens", type=int, default=24)
    ins.add_argument("--pairs", type=int, default=0, help="lost-in-middle picture: cases per gold position (0: skip)")
    ins.add_argument("--long", type=int, default=0, help="also one prefill of this many tokens: peak memory")
    ins.add_argument("--seed", type=int, default=0)
    ins.add_argument("--device", default="cpu")
    ins.add_argument("--out", default=DEFAULT_OUT, help=f"folder of the .json/.png (default: ./{DEFAULT_OUT})")
    ins.add_argument("--name", help="file name stem (default: inspect_<model>_<device>)")
    ins.add_argument("--overwrite", action="store_true", help="replace existing files of the same name")
    ev = sub.add_parser("eval", help="evaluations")
    ev.add_argument("what", choices=["lost-in-middle", "coverage", "attention-keywords"])
    ev.add_argument("--model", help="HF model folder/id or a .gguf path (default: embedded SmolLM2-135M-Instruct)")
    ev.add_argument("--k", type=int, nargs="+", default=[10, 20], help="key-value pairs per case")
    ev.add_argument("--n", type=int, default=50, help="cases per (k, position) cell")
    ev.add_argument("--seed", type=int, default=0, help="case seed (k is added for each k)")
    ev.add_argument("--beta", type=float, nargs="*", default=[DEFAULT_BETA], help="focus boosts (one row each)")
    ev.add_argument("--layers", nargs="+", default=[DEFAULT_LAYERS],
                    help="layer sets that get the boost, 'all' or like '8-21,25' (one row per beta and set)")
    ev.add_argument("--scope", nargs="+", choices=["all", "data"], default=[DEFAULT_SCOPE],
                    help="boost every occurrence of the key, or only the one in the JSON data (one row each)")
    ev.add_argument("--target", type=float, nargs="*", default=[],
                    help="lost-in-middle: target masses p on the queried key; coverage: on each case's entities (one row each)")
    ev.add_argument("--calibrate", type=float, nargs="*", default=[],
                    help="lost-in-middle: position-calibration strengths lambda (one row each)")
    ev.add_argument("--select-heads", type=int, nargs="*", default=[],
                    help="lost-in-middle / coverage / attention-keywords: target mass on the top-K heads of "
                    "the readout's response (one row per K and --target)")
    ev.add_argument("--calibration-seed", type=int, default=1000, help="cases the calibration is measured on")
    ev.add_argument("--skip-baseline", action="store_true", help="lost-in-middle: no baseline row")
    ev.add_argument("--calibration-n", type=int, default=10, help="cases per gold position for the calibration")
    ev.add_argument("--batch-size", type=int, default=25)
    ev.add_argument("--ids", choices=["uuid", "hex8"], default="uuid",
                    help="keys and values: UUIDs (Liu et al.) or 8 hex digits")
    ev.add_argument("--max-new-tokens", type=int,
                    help="answer budget (default: 40 for uuid, 12 for hex8; coverage: 200)")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--out", default=DEFAULT_OUT, help=f"folder of the .json/.md/.png (default: ./{DEFAULT_OUT})")
    ev.add_argument("--name", help="file name stem of the results (default: <evaluation>_<model>_<device>)")
    ev.add_argument("--tables-only", action="store_true",
                    help="lost-in-middle: write the table and plot again from <out>/<name>.json (no model)")
    ev.add_argument("--note", default="", help="a sentence recorded with the results")
    cov = ev.add_argument_group("coverage")
    cov.add_argument("--split", choices=["tune", "report", "all"], default="tune", help="which half of the cases")
    cov.add_argument("--cases", default="en",
                     help="case set: en (built-in English, the default), zh (Chinese), quoted (summaries that quote "
                          "their entities), or a JSON/JSONL file of cases as in focuskern/experiments/"
                          "coverage_cases.json (id, prompt, entities, split tune|report, optional kind)")
    cov.add_argument("--policies", nargs="+", help="rows, names in focuskern.experiments.coverage.POLICIES "
                     "(default: all of DEFAULT_POLICIES there)")
    cov.add_argument("--strengths", type=float, nargs="+", default=[1.0], help="push multipliers (the plot's points)")
    cov.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="sampled answers (besides greedy)")
    cov.add_argument("--limit", type=int, help="only the first N cases of the split (quick runs)")
    cov.add_argument("--repetition-penalty", type=float, default=1.05)
    cov.add_argument("--no-repeat-ngram-size", type=int, default=2)
    cov.add_argument("--with-logits", action="store_true",
                     help="the --target rows on selected heads (all heads without --select-heads) also together "
                     "with the logits lever (the defaults policy)")
    cov.add_argument("--resume", action="store_true", help="reuse rows of an earlier run with the same settings "
                     "(all reused: only the tables are written again)")
    cov.add_argument("--versus", nargs="+", default=["baseline"], help="rows the 'vs' columns compare with "
                     "(policy or attention row names; two columns each)")
    ak = ev.add_argument_group("attention-keywords (seed 000's task; --target: masses p, default 0.03 0.1)")
    ak.add_argument("--samples", type=int, default=5, help="sampled answers per row (one batch, seed --seed)")
    ak.add_argument("--heads-from", help="with --select-heads: a head profile (<name>_heads.json of eval coverage)")
    ak.add_argument("--both", type=float, default=0.1, help="target mass of the logits + attention row (0: none)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "backends":
        import focuskern
        for name, status in focuskern.backends().items():
            print(f"{name:8s} {status}")
        return 0
    if args.command == "demo" and args.attention:
        from .experiments.lost_in_middle import demo_attention
        return demo_attention(args)
    if args.command == "demo":
        from .experiments.demo import main as demo_main
        return demo_main(args)
    if args.command == "inspect":
        args.name = args.name or result_name("inspect", args.model, args.device)
        from .experiments.inspect import main as inspect_main
        return inspect_main(args)
    if args.command == "eval":
        args.name = args.name or result_name(args.what.replace("-", "_"), args.model, args.device)
        if args.what == "coverage":
            from .experiments.coverage import main as coverage_main
            return coverage_main(args)
        if args.what == "attention-keywords":
            from .experiments.attention_keywords import main as keywords_main
            return keywords_main(args)
        from .experiments.lost_in_middle_run import main as eval_main
        return eval_main(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
