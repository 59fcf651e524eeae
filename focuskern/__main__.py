"""focuskern command line: ``focuskern demo`` (``python -m focuskern demo``), ``focuskern backends``."""
from __future__ import annotations

import argparse
import sys


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
    bench = sub.add_parser("bench", help="end-to-end benchmarks")
    bench.add_argument("what", choices=["generate"])
    bench.add_argument("--model")
    bench.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    bench.add_argument("--new-tokens", type=int, default=64)
    bench.add_argument("--repeats", type=int, default=3)
    bench.add_argument("--device", default="cpu")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "backends":
        import focuskern
        for name, status in focuskern.backends().items():
            print(f"{name:8s} {status}")
        return 0
    if args.command == "demo":
        from .demo import main as demo_main
        return demo_main(args)
    if args.command == "bench":
        from .bench import main as bench_main
        return bench_main(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
