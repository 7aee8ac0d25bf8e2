"""The `digits` command: parses arguments and calls the library. Nothing else lives here.

Heavy libraries (Keras, TensorFlow) are imported inside the command handlers, so `digits --help`
and `digits data` answer at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from digits import __version__
from digits.errors import DigitsError


# --- data (issue 2) -------------------------------------------------------------------------------


def add_data_commands(subcommands) -> None:
    data = subcommands.add_parser(
        "data",
        help="load MNIST, verify it and show what it holds",
        description="Load MNIST (vendored copy, --data-dir, cache or mirrors), verify its checksums, "
        "and print shapes, class counts and pixel statistics; write a grid of the first digits.",
    )
    data.add_argument("--data-dir", type=Path, help="read IDX or mnist.npz files from this directory")
    data.add_argument("--out", type=Path, default=Path("out"), help="where the sample grid PNG goes (default: out/)")
    data.set_defaults(handler=run_data)


def run_data(args) -> int:
    raise DigitsError("`digits data` is not built yet.")


# --- entry point ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digits",
        description="Train, understand, compare and use MNIST handwritten-digit classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"digits {__version__}")
    subcommands = parser.add_subparsers(title="commands", metavar="COMMAND")
    add_data_commands(subcommands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except DigitsError as error:
        print(f"digits: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("digits: interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
