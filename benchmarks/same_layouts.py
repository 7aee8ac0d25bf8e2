"""Does a change to the preparation keep every answer? A digest of `find_digits` on 360 pictures, and its time.

The pictures: the 200 page drawings of `benchmarks/serve_load.py` (read from their grey pixels, as a worker reads
them), then 40 numbers of each of `benchmarks/read_numbers.py`'s four kinds (handwritten, touching, typed,
photo-like; seed 0). Each picture's layout (every candidate's 28×28 view, bytes and dtype, its box, cuts and
prior) is hashed; equal digests before and after a change mean byte-identical layouts. Then preparing a drawing
alone is timed: CPU time (process time) for the 200 drawings, best of --rounds.

    PYTHONPATH=<the old src> .venv/bin/python benchmarks/same_layouts.py --save before.json
    .venv/bin/python benchmarks/same_layouts.py --against before.json    # lists the pictures that differ
    .venv/bin/python benchmarks/same_layouts.py --regroup --rounds 8     # the one-mark shortcut's time, in turns
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))  # The other benchmarks' pictures.
from digits.data.mnist import load_mnist  # noqa: E402
from digits.data.numbers import mnist_digits  # noqa: E402
from digits.data.synthetic import find_fonts  # noqa: E402
from digits.pictures import segment  # noqa: E402
from digits.pictures.decode import ImageError  # noqa: E402
from digits.pictures.drawing import drawing_image, drawing_size  # noqa: E402
from digits.pictures.segment import Layout, find_digits  # noqa: E402
from read_numbers import make_number  # noqa: E402
from serve_load import PAYLOAD_COUNT, encode, page_drawings  # noqa: E402

# Numbers of each kind of benchmarks/read_numbers.py.
NUMBERS_PER_KIND = 40


def pictures() -> list[Image.Image]:
    """The page drawings first (as grey images read from their PGM bytes), then the numbers."""
    drawn = []
    for drawing in page_drawings(PAYLOAD_COUNT):
        body = encode(drawing, "pgm")
        drawn.append(drawing_image(body, drawing_size(body)))
    mnist, fonts = mnist_digits(load_mnist(), "test"), find_fonts()
    rng = np.random.default_rng(0)
    numbers = []
    for kind in ("handwritten", "touching", "fonts", "photo-like"):
        for _ in range(NUMBERS_PER_KIND):
            picture = make_number(kind, mnist, fonts, rng)[0]
            numbers.append(picture if isinstance(picture, Image.Image) else Image.fromarray(picture))
    return drawn + numbers


def digest(layout: Layout) -> str:
    """A hash of everything a layout holds: its end node, and each candidate's cuts, box, prior and view."""
    hashed = hashlib.sha256(str(layout.end).encode())
    for candidate in layout.candidates:
        box = tuple(int(value) for value in candidate.box)
        hashed.update(repr((candidate.start, candidate.stop, box, float(candidate.prior))).encode())
        hashed.update(candidate.view.tobytes() + str(candidate.view.dtype).encode())
    return hashed.hexdigest()[:16]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--save", type=Path, help="write each picture's digest here (JSON)")
    parser.add_argument("--against", type=Path, help="compare each picture's digest with a file --save wrote")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of timing the drawings (default: 5)")
    parser.add_argument("--regroup", action="store_true",
                        help="also time the drawings with every mark grouped again by find_ink, as before the "
                        "one-mark shortcut (segment._pieces), in turns with it")
    args = parser.parse_args()

    images = pictures()
    digests = []
    for image in images:
        try:
            digests.append(digest(find_digits(image)))
        except ImageError as error:  # No digit, too many digits: the same refusal is the same answer.
            digests.append(type(error).__name__)
    rounds = []
    for _ in range(args.rounds):
        started = time.process_time()
        for image in images[:PAYLOAD_COUNT]:
            find_digits(image)
        rounds.append((time.process_time() - started) * 1000 / PAYLOAD_COUNT)
    if args.regroup:
        one_mark_pieces = segment._pieces
        modes = {"regrouped": lambda residual: (*one_mark_pieces(residual)[:3], None), "one mark": one_mark_pieces}
        timings: dict[str, list[float]] = {mode: [] for mode in modes}
        for _ in range(args.rounds):
            for mode, pieces in modes.items():
                segment._pieces = pieces
                started = time.process_time()
                for image in images[:PAYLOAD_COUNT]:
                    find_digits(image)
                timings[mode].append((time.process_time() - started) * 1000 / PAYLOAD_COUNT)
        segment._pieces = one_mark_pieces
        print("; ".join(f"{mode}: best {min(values):.3f} ms, median {statistics.median(values):.3f} ms a drawing"
                        for mode, values in timings.items())
              + f"; ratio {min(timings['regrouped']) / min(timings['one mark']):.2f}x (best), "
              f"{statistics.median(timings['regrouped']) / statistics.median(timings['one mark']):.2f}x (median)")
    overall = hashlib.sha256("".join(digests).encode()).hexdigest()[:16]
    print(f"{len(images)} pictures, layouts digest {overall}; preparing a drawing alone {min(rounds):.3f} ms of CPU "
          f"(best of {args.rounds} rounds of {PAYLOAD_COUNT}: {', '.join(f'{value:.3f}' for value in rounds)})")
    if args.save:
        args.save.write_text(json.dumps(digests))
    if args.against:
        before = json.loads(args.against.read_text())
        differ = [index for index, (old, new) in enumerate(zip(before, digests, strict=True)) if old != new]
        print(f"same layouts: {len(digests) - len(differ)} of {len(digests)}"
              + (f"; differ: pictures {differ[:20]}" if differ else ""))
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
