"""Options that several commands share, so each reads and means the same everywhere."""

from __future__ import annotations

from pathlib import Path


def add_data_dir_option(parser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="read IDX files (raw or .gz) or a Keras mnist.npz from this directory, e.g. Fashion-MNIST "
        "(default: $DIGITS_DATA_DIR, else the MNIST that ships with digits)",
    )


def add_runs_dir_option(parser) -> None:
    parser.add_argument("--runs-dir", type=Path, metavar="DIR", default=Path("runs"),
                        help="where run folders go (default: runs/)")
