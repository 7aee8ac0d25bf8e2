"""A number's pieces → its candidate digits: each piece read whole, and each wide piece cut into stretches.

Step 3 of `digits.pictures.segment`: a piece much wider than tall may be several touching digits. Candidate cuts
are paths round strokes and columns with the least ink (`digits.pictures.cuts`), a few per digit the piece may
hold, and every stretch between two cuts is prepared as a digit, with a prior against stretches too wide or too
short and cuts through many strokes. A `Layout` holds them all as edges between numbered cuts (nodes); the
classifier (outside this stage) scores them and `segment.choose_digits` takes the most confident path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from digits.pictures.cuts import Cut, between, edge_cut, find_cuts
from digits.pictures.decode import ImageError
from digits.pictures.prepare import _dilate, centre_in_field, fit_box, upper_quartile

Box = tuple[slice, slice]

# A picture holds at most this many digits: a phone number or a date, not a page of text.
MAX_DIGITS = 12
# A piece wider than this many times its height is taken for touching digits (MNIST's widest digits, a 0 or
# a 2 with a long foot, are about as wide as tall).
SPLIT_RATIO = 1.15
# A digit's usual width over its height, to guess how many touching digits a wide piece holds.
DIGIT_RATIO = 0.7
# Candidate cut columns per digit a wide piece may hold, and how close two may be (a share of the line height).
CUT_CHOICES = 3
MIN_CUT_SPACING = 0.08
# A stretch between two cuts is read as a digit if its width is within these shares of the line height (a 1 is
# narrow, a 0 or a flat 5 about as wide as tall).
MIN_DIGIT_WIDTH = 0.12
MAX_DIGIT_WIDTH = 1.3
# Wider than this share of the line height, a stretch read as one digit loses WIDE_PENALTY per line height more
# log-confidence (on 80 touching numbers of benchmarks/read_numbers.py: none 67.5 % read exactly, 5 75 %, 8 74 %,
# 15 70 %; 5 from 0.75 of the height 60 %).
WIDE_DIGIT = 0.9
WIDE_PENALTY = 5.0
# How a wide piece's stretches are scored besides the classifier's confidence, chosen on touching numbers of MNIST
# *training* digits 50,000-59,999 (`benchmarks/read_numbers.py --digits holdout --sets touching`, seeds 0 and 1,
# 300 numbers each; never the test digits), see docs/numbers.md:
# - a cut loses CUT_PENALTY per stroke it crosses (`digits.pictures.cuts`): touching digits meet in a stroke or
#   two, and a cut through one digit's loops crosses more;
# - a stretch whose ink is shorter than SHORT_STRETCH of the line height loses SHORT_PENALTY per line height
#   less: the digits of one line are about as tall as each other, and a sliver cut off a digit is not;
# - each digit read gains DIGIT_BONUS, as the classifier reads a wide stretch of two digits about as confidently
#   as each of them.
CUT_PENALTY = 0.5
SHORT_STRETCH = 0.75
SHORT_PENALTY = 5.0
DIGIT_BONUS = 0.25


class TooManyDigits(ImageError):
    """A picture with more than MAX_DIGITS digits (a page of text, a grid)."""


@dataclass(frozen=True, eq=False)
class Candidate:
    """One stretch of ink that may be a digit: from cut `start` to cut `stop` (nodes of the layout's paths)."""

    start: int
    stop: int
    box: tuple[int, int, int, int]  # (x, y, width, height) in the picture's pixels
    view: np.ndarray  # (28, 28) uint8, MNIST-style
    # Added to the classifier's log-confidence: below 0 for a stretch wider than a digit usually is.
    prior: float = 0.0


@dataclass(frozen=True, eq=False)
class Layout:
    """Every candidate digit in a picture; a path of candidates from node 0 to `end` is one way to read it."""

    candidates: tuple[Candidate, ...]
    end: int

    @property
    def views(self) -> np.ndarray:
        """(N, 28, 28) uint8: every candidate's view, to be classified in one batch."""
        return np.stack([candidate.view for candidate in self.candidates])

    @property
    def is_single(self) -> bool:
        """Whether the picture holds one digit and nothing to choose (prepared exactly as `prepare_image`)."""
        return len(self.candidates) == 1


def writing_height(boxes: list[Box]) -> int:
    """The writing's height: the median of its pieces' heights (a flat 5 or a dash is lower than the line)."""
    return max(1, round(float(np.median([rows.stop - rows.start for rows, _ in boxes]))))


def is_wide(box: Box, line_height: int) -> bool:
    """Whether a piece is wider than one digit: its height, or the line's when it is taller, times SPLIT_RATIO."""
    rows, columns = box
    return (columns.stop - columns.start) > SPLIT_RATIO * max(rows.stop - rows.start, line_height)


def layout_candidates(residual: np.ndarray, labels: np.ndarray, boxes: list[Box], threshold: float, scale: float,
            offset: tuple[int, int], label: str, whole: Candidate | None = None) -> Layout:
    """Each piece a candidate, and each wide piece every stretch between candidate cuts; nodes left to right.

    `whole`: the candidate of a picture's only piece read whole, as `prepare_image` reads it.
    """
    if len(boxes) > MAX_DIGITS:  # Refused before preparing each one.
        raise TooManyDigits(f"{label} holds more than {MAX_DIGITS} digits; digits reads a number of at most "
                            f"{MAX_DIGITS} digits, so crop the picture to one.")
    candidates: list[Candidate] = []
    node = 0  # Where the next piece starts: the last node so far.
    line_height = writing_height(boxes)
    for number, (rows, columns) in enumerate(boxes, start=1):
        piece = labels[rows, columns] == number  # (h, w) bool
        if whole is not None:
            read_whole = Candidate(node, node + 1, whole.box, whole.view)
        else:
            view, box = _prepare_stretch(residual[rows, columns], piece, threshold)
            read_whole = Candidate(node, node + 1, picture_box(shift_box(box, rows, columns), scale, offset), view)
        if not is_wide((rows, columns), line_height):
            candidates.append(read_whole)
            node += 1
            continue
        # Any stretch between two cuts as wide as a digit may be one: the classifier's confidence picks the path,
        # however many digits it holds, with reading the piece whole (one wide digit) always one of them.
        height = max(rows.stop - rows.start, line_height)
        piece_height, piece_width = piece.shape  # (h, w)
        cuts = [edge_cut(piece_height, 0), *_cuts(piece, height), edge_cut(piece_height, piece_width)]
        nodes = [node, *range(node + 1, node + len(cuts))]
        # A picture's only piece read whole is as likely a wide digit as touching ones: single digits read as before.
        candidates.append(Candidate(node, nodes[-1], read_whole.box, read_whole.view,
                                    DIGIT_BONUS + (0.0 if whole is not None else _width_prior(piece_width, height))))
        piece_residual = residual[rows, columns]
        for first in range(len(cuts) - 1):
            for last in range(first + 1, len(cuts)):
                if cuts[last].position - cuts[first].position > MAX_DIGIT_WIDTH * height:
                    break
                if (first, last) == (0, len(cuts) - 1):
                    break
                # Only the columns the two cuts span: (h, reach) bool, the ink between them.
                start, stop = int(cuts[first].columns.min()), min(int(cuts[last].columns.max()) + 1, piece_width)
                stretch = piece[:, start:stop] & between(cuts[first], cuts[last], start, stop)
                inked = np.flatnonzero(stretch.any(axis=0))
                if inked.size == 0 or inked[-1] + 1 - inked[0] < MIN_DIGIT_WIDTH * height:
                    continue
                left, right = start + int(inked[0]), start + int(inked[-1]) + 1
                # A column of paper either side, as `_prepare_stretch` crops a pixel beyond the strokes.
                around = slice(max(left - 1, 0), min(right + 1, piece_width))
                strokes = np.zeros((piece_height, around.stop - around.start), bool)
                strokes[:, left - around.start : right - around.start] = stretch[:, inked[0] : inked[-1] + 1]
                view, box = _prepare_stretch(piece_residual[:, around], strokes, threshold)
                box = (box[0], slice(box[1].start + around.start, box[1].stop + around.start))
                inked_rows = np.flatnonzero(strokes.any(axis=1))
                tall = (inked_rows[-1] + 1 - inked_rows[0]) / height
                prior = (_width_prior(right - left, height) + DIGIT_BONUS - CUT_PENALTY * cuts[last].strokes_crossed
                         - SHORT_PENALTY * max(0.0, SHORT_STRETCH - tall))
                candidates.append(Candidate(nodes[first], nodes[last],
                                            picture_box(shift_box(box, rows, columns), scale, offset), view, prior))
        node = nodes[-1]
    end = node
    if _likely_digits(boxes, line_height) > MAX_DIGITS:
        raise TooManyDigits(f"{label} holds more than {MAX_DIGITS} digits; digits reads a number of at most "
                            f"{MAX_DIGITS} digits, so crop the picture to one.")
    return Layout(tuple(candidates), end)


def _width_prior(width: int, height: int) -> float:
    """A log-prior against reading touching digits as one: 0 up to WIDE_DIGIT of the line height, then falling."""
    return -WIDE_PENALTY * max(0.0, width / height - WIDE_DIGIT)


def _cuts(piece: np.ndarray, height: int) -> list[Cut]:
    """Where touching digits in a wide piece may meet (`digits.pictures.cuts.find_cuts`), at least MIN_CUT_SPACING
    of the height apart and a narrowest digit from either edge: CUT_CHOICES per digit it may hold, twice as many
    when it may hold more than two.

    A piece no wider than two digits is most often one wide digit (a 0 or a 2 drawn wide): it gets as many
    candidate cuts as straight cuts alone gave it, so a single digit costs little more to read.
    """
    digits = max(2, round(piece.shape[1] / (DIGIT_RATIO * height)))
    return find_cuts(piece, height, margin=max(1, round(MIN_DIGIT_WIDTH * height)),
                     spacing=max(2, round(MIN_CUT_SPACING * height)),
                     limit=CUT_CHOICES * digits * (1 if digits <= 2 else 2))


def _prepare_stretch(residual: np.ndarray, strokes: np.ndarray, threshold: float) -> tuple[np.ndarray, Box]:
    """One digit's strokes (bool) and the residual ink around them → its (28, 28) view and its box in them.

    As `find_ink` does for one digit: cropped a pixel beyond the strokes, the ink scaled so strokes are 1, with
    anti-aliased edges next to them kept and everything else (a neighbour's ink) dropped.
    """
    height, width = strokes.shape
    rows, columns = np.flatnonzero(strokes.any(axis=1)), np.flatnonzero(strokes.any(axis=0))
    top, bottom = max(rows[0] - 1, 0), min(rows[-1] + 2, height)
    left, right = max(columns[0] - 1, 0), min(columns[-1] + 2, width)
    kept = strokes[top:bottom, left:right]
    ink = residual[top:bottom, left:right]
    level = upper_quartile(ink[kept])
    floor = 0.5 * threshold
    ink = np.clip((ink - floor) / max(level - floor, 1e-6), 0.0, 1.0) * _dilate(kept, 2)
    return centre_in_field(fit_box(ink)), (slice(top, bottom), slice(left, right))


def shift_box(box: Box, rows: slice, columns: slice) -> Box:
    return (slice(box[0].start + rows.start, box[0].stop + rows.start),
            slice(box[1].start + columns.start, box[1].stop + columns.start))


def picture_box(box: Box, scale: float, offset: tuple[int, int]) -> tuple[int, int, int, int]:
    """A box in the working grey's pixels → (x, y, width, height) in the picture's pixels."""
    rows, columns = box
    left, top = offset[0] + round(columns.start * scale), offset[1] + round(rows.start * scale)
    right, bottom = offset[0] + round(columns.stop * scale), offset[1] + round(rows.stop * scale)
    return (left, top, max(1, right - left), max(1, bottom - top))


def _likely_digits(boxes: list[Box], line_height: int) -> int:
    """How many digits the pieces likely hold: one each, a wide one as many as its width holds digits."""
    return sum(max(1, round((columns.stop - columns.start) / (DIGIT_RATIO * max(rows.stop - rows.start, line_height))))
               if is_wide((rows, columns), line_height) else 1 for rows, columns in boxes)
