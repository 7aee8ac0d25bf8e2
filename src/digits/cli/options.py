"""Options that several commands share, so each reads and means the same everywhere."""

from __future__ import annotations

from pathlib import Path

from digits.errors import DigitsError


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


def check_range(flag: str, value: int, low: int, high: int) -> None:
    """Refuse a whole-number flag outside low..high in one sentence, before any work: a huge count would otherwise
    be a crash or an endless loop far into the command."""
    if not low <= value <= high:
        raise DigitsError(f"{flag} must be between {low:,} and {high:,}, not {value}.")
