"""Command line: ``focuskern demo`` / ``python -m focuskern demo``."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="focuskern", description=__doc__)
    parser.add_argument("command", choices=["backends"])
    args = parser.parse_args(argv)
    if args.command == "backends":
        import focuskern
        for name, status in focuskern.backends().items():
            print(f"{name:8s} {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
