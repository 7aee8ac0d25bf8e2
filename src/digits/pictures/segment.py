"""A picture of a number → its digits, each prepared MNIST-style, left to right.

After the clean-up `digits.pictures.prepare` does for one digit (polarity, background, stroke threshold), the
strokes are cut into digits:

1. pieces: connected ink (strokes a pixel or two apart count as connected, as for one digit); the paper's
   edge and specks much smaller than the writing are dropped;
2. joined: pieces whose columns overlap are one digit (the two strokes of a 4 or a 5, a broken loop); pieces no
   wider together than one digit are also read whole, as `prepare_image` reads them, if the classifier reads
   that clearly better than the pieces (WHOLE_PRIOR);
3. split: a piece much wider than tall is several touching digits. Candidate cuts are paths round strokes and
   columns with the least ink (`digits.pictures.cuts`), a few per digit the piece may hold, and every stretch
   between two cuts is prepared as a digit, with a prior against stretches too wide or too short and cuts through
   many strokes; the classifier (outside this stage) scores them and `choose_digits` takes the most confident path;
4. ordered left to right, at most MAX_DIGITS.

`find_digits` gives a `Layout` (every candidate digit, prepared); `choose_digits` picks the digits from the
scores a classifier gives them. A picture found to hold one digit is prepared exactly as `prepare_image` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from digits.pictures.cuts import Cut, between, edge_cut, find_cuts
from digits.pictures.decode import ImageError, NoDigitError, load_image, source_name, to_grey
from digits.pictures.prepare import (
    FIT_SIDE,
    _dilate,
    _frame_edges,
    _nonzero_box,
    centre_in_field,
    fit_box,
    ink_on_black,
    ink_threshold,
    prepare_grey,
    remove_background,
    upper_quartile,
)

# A picture holds at most this many digits: a phone number or a date, not a page of text.
MAX_DIGITS = 12
# A piece whose box is both shorter and narrower than this fraction of the tallest piece is a speck.
SPECK_FRACTION = 0.2
# Pieces whose column ranges overlap by this fraction of the narrower one belong to one digit.
JOIN_OVERLAP = 0.3
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
# Pieces together no wider than one digit (SPLIT_RATIO) may be one digit with a gap in a stroke: the whole picture,
# read as `prepare_image` reads it, competes with reading its pieces, and gains this log-confidence over them.
# Chosen on MNIST *training* digits 50000-59999 (never the test set) drawn as in benchmarks/read_numbers.py: of 4,000
# single digits, those in several pieces read whole beat their pieces by 1.0 or more; of 1,000 numbers a set, the
# whole beat the pieces by at most 0.07 (all but 1 touching number): -0.5 lies between. A digit with a hairline
# fragment read as a confident "1" (a 9's thin tail) beats its pieces by only about 0.1, as some numbers do: it
# stays split.
WHOLE_PRIOR = -0.5


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


def find_digits_in_file(source, *, name: str | None = None) -> Layout:
    """`load_image` then `find_digits`: a picture file or its bytes → its `Layout`."""
    label = source_name(source, name)
    return find_digits(load_image(source, name=label), name=label)


def find_digits(image: Image.Image, *, name: str | None = None) -> Layout:
    """Every candidate digit in a picture of a number (or of one digit), prepared MNIST-style.

    Raises NoDigitError when there is no ink, TooManyDigits beyond MAX_DIGITS digits.
    """
    label = name or getattr(image, "filename", "") or "the image"
    grey = to_grey(image, label)  # (H, W) float32 in [0, 1], at most WORK_SIDE on a side
    residual = remove_background(ink_on_black(grey))
    scale = image.width / grey.shape[1]
    pieces = _pieces(residual)
    if pieces is None:
        raise NoDigitError(f"no digit found in {label}: the picture is blank or has too little contrast.")
    strokes, boxes, threshold, one_mark = pieces
    if len(boxes) == 1:
        # One piece is read as one digit exactly as `prepare_image` reads it; if wide, that is one choice of several.
        view, (top, bottom, left, right) = prepare_grey(image, grey, label, residual, threshold, one_mark)
        whole = Candidate(0, 1, _picture_box((slice(top, bottom), slice(left, right)), scale, (0, 0)), view)
        if not _is_wide(boxes[0], _line_height(boxes)):
            return Layout((whole,), 1)
        return _layout(residual, strokes, boxes, threshold, scale, (0, 0), label, whole)
    offset = (0, 0)
    whole_picture = None
    if not _is_wide(_union_all(boxes), 0):
        # Pieces no wider together than one digit may be one digit with a gap in a stroke: the whole picture read
        # as `prepare_image` reads it is one more choice, spanning every piece.
        view, (top, bottom, left, right) = prepare_grey(image, grey, label, residual, threshold)
        whole_picture = (_picture_box((slice(top, bottom), slice(left, right)), scale, (0, 0)), view)
    line_height = max(rows.stop - rows.start for rows, _ in boxes)
    if scale > 1 and line_height < FIT_SIDE:
        # Small digits in a big picture: find them again in the original pixels around them.
        top = min(rows.start for rows, _ in boxes)
        bottom = max(rows.stop for rows, _ in boxes)
        left = min(columns.start for _, columns in boxes)
        right = max(columns.stop for _, columns in boxes)
        margin = line_height // 2
        height, width = grey.shape
        around = (max(0, left - margin), max(0, top - margin), min(width, right + margin),
                  min(height, bottom + margin))
        crop = image.crop(tuple(round(edge * scale) for edge in around))
        closer_grey = to_grey(crop, label)
        closer_residual = remove_background(ink_on_black(closer_grey))
        closer = _pieces(closer_residual)
        if closer is not None:
            offset = (round(around[0] * scale), round(around[1] * scale))
            residual, (strokes, boxes, threshold, _) = closer_residual, closer
            scale = crop.width / closer_grey.shape[1]
    layout = _layout(residual, strokes, boxes, threshold, scale, offset, label)
    if whole_picture is None:
        return layout
    return Layout((*layout.candidates, Candidate(0, layout.end, *whole_picture, WHOLE_PRIOR)), layout.end)


def choose_digits(layout: Layout, scores: np.ndarray) -> list[Candidate]:
    """The path of candidates, left to right, whose scores (one per candidate, e.g. log-probabilities) sum highest."""
    best = np.full(layout.end + 1, -np.inf)
    best[0] = 0.0
    came_by: list[int | None] = [None] * (layout.end + 1)
    # Nodes are numbered left to right, so taking candidates by their stop visits each node's arrivals in order.
    order = sorted(range(len(layout.candidates)), key=lambda index: layout.candidates[index].stop)
    for index in order:
        candidate = layout.candidates[index]
        total = best[candidate.start] + float(scores[index])
        if total > best[candidate.stop]:
            best[candidate.stop], came_by[candidate.stop] = total, index
    path: list[Candidate] = []
    node = layout.end
    while node != 0:
        arrival = came_by[node]
        if arrival is None:  # Cannot happen for a layout from find_digits: every node is reached.
            raise ValueError("the layout has no path from its first node to its last")
        path.append(layout.candidates[arrival])
        node = layout.candidates[arrival].start
    return path[::-1]


# --- pieces -----------------------------------------------------------------------------------------


Box = tuple[slice, slice]


def _pieces(residual: np.ndarray) -> tuple[np.ndarray, list[Box], float, np.ndarray | None] | None:
    """The labelled strokes (0: paper, k: piece k), each piece's box, left to right, the stroke threshold, and the
    strokes (bool) when they are all one mark, strokes a pixel apart joined (else None: see `find_ink`)."""
    threshold = ink_threshold(residual)
    if threshold is None:
        return None
    strokes = residual > threshold
    strokes &= ~_frame_edges(strokes)
    height, width = strokes.shape
    # Strokes this close are one piece, as `find_ink` groups a broken pen line, but measured on the shorter side:
    # a long number's width would join its digits.
    gap = max(1, round(0.01 * min(height, width)))
    # Labelled only around the strokes, as far as the grouping reaches: the same pieces, numbered alike, at a
    # fraction of the cost on a drawing, whose strokes fill a part of it.
    around = _nonzero_box(strokes, margin=gap)
    near = strokes[around]
    groups, count = ndimage.label(_dilate(near, gap), structure=np.ones((3, 3)))
    groups = groups * near
    if count == 0 or not near.any():
        return None
    found = [None if box is None else _shift(box, *around) for box in ndimage.find_objects(groups)]
    boxes = {index + 1: box for index, box in enumerate(found) if box is not None}
    tallest = max(rows.stop - rows.start for rows, _ in boxes.values())
    if tallest < 2:
        return None
    # Specks: small in both directions next to the writing's height.
    for number, (rows, columns) in list(boxes.items()):
        if max(rows.stop - rows.start, columns.stop - columns.start) < SPECK_FRACTION * tallest:
            del boxes[number]
    # Pieces of one digit: their columns overlap. Joined left to right until nothing more overlaps.
    merged: list[tuple[list[int], Box]] = []
    for number, box in sorted(boxes.items(), key=lambda item: item[1][1].start):
        for index, (numbers, other) in enumerate(merged):
            if _columns_overlap(box, other):
                merged[index] = (numbers + [number], _union(box, other))
                break
        else:
            merged.append(([number], box))
    changed = True
    while changed:
        changed = False
        for first in range(len(merged)):
            for second in range(first + 1, len(merged)):
                if _columns_overlap(merged[first][1], merged[second][1]):
                    numbers = merged[first][0] + merged[second][0]
                    merged[first] = (numbers, _union(merged[first][1], merged[second][1]))
                    del merged[second]
                    changed = True
                    break
            if changed:
                break
    merged.sort(key=lambda item: item[1][1].start)
    relabel = np.zeros(count + 1, np.int32)
    for index, (numbers, _) in enumerate(merged):
        relabel[numbers] = index + 1
    labels = np.zeros(strokes.shape, np.int32)
    labels[around] = relabel[groups]
    return labels, [box for _, box in merged], threshold, strokes if count == 1 else None


def _columns_overlap(first: Box, second: Box) -> bool:
    overlap = min(first[1].stop, second[1].stop) - max(first[1].start, second[1].start)
    narrower = min(first[1].stop - first[1].start, second[1].stop - second[1].start)
    return overlap > JOIN_OVERLAP * narrower


def _union(first: Box, second: Box) -> Box:
    return (slice(min(first[0].start, second[0].start), max(first[0].stop, second[0].stop)),
            slice(min(first[1].start, second[1].start), max(first[1].stop, second[1].stop)))


def _union_all(boxes: list[Box]) -> Box:
    """The box around every piece."""
    union = boxes[0]
    for box in boxes[1:]:
        union = _union(union, box)
    return union


def _line_height(boxes: list[Box]) -> int:
    """The writing's height: the median of its pieces' heights (a flat 5 or a dash is lower than the line)."""
    return max(1, round(float(np.median([rows.stop - rows.start for rows, _ in boxes]))))


def _is_wide(box: Box, line_height: int) -> bool:
    """Whether a piece is wider than one digit: its height, or the line's when it is taller, times SPLIT_RATIO."""
    rows, columns = box
    return (columns.stop - columns.start) > SPLIT_RATIO * max(rows.stop - rows.start, line_height)


# --- candidates -------------------------------------------------------------------------------------


def _layout(residual: np.ndarray, labels: np.ndarray, boxes: list[Box], threshold: float, scale: float,
            offset: tuple[int, int], label: str, whole: Candidate | None = None) -> Layout:
    """Each piece a candidate, and each wide piece every stretch between candidate cuts; nodes left to right.

    `whole`: the candidate of a picture's only piece read whole, as `prepare_image` reads it.
    """
    if len(boxes) > MAX_DIGITS:  # Refused before preparing each one.
        raise TooManyDigits(f"{label} holds more than {MAX_DIGITS} digits; digits reads a number of at most "
                            f"{MAX_DIGITS} digits, so crop the picture to one.")
    candidates: list[Candidate] = []
    node = 0  # Where the next piece starts: the last node so far.
    line_height = _line_height(boxes)
    for number, (rows, columns) in enumerate(boxes, start=1):
        piece = labels[rows, columns] == number  # (h, w) bool
        if whole is not None:
            read_whole = Candidate(node, node + 1, whole.box, whole.view)
        else:
            view, box = _prepare_stretch(residual[rows, columns], piece, threshold)
            read_whole = Candidate(node, node + 1, _picture_box(_shift(box, rows, columns), scale, offset), view)
        if not _is_wide((rows, columns), line_height):
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
                                            _picture_box(_shift(box, rows, columns), scale, offset), view, prior))
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


def _shift(box: Box, rows: slice, columns: slice) -> Box:
    return (slice(box[0].start + rows.start, box[0].stop + rows.start),
            slice(box[1].start + columns.start, box[1].stop + columns.start))


def _picture_box(box: Box, scale: float, offset: tuple[int, int]) -> tuple[int, int, int, int]:
    """A box in the working grey's pixels → (x, y, width, height) in the picture's pixels."""
    rows, columns = box
    left, top = offset[0] + round(columns.start * scale), offset[1] + round(rows.start * scale)
    right, bottom = offset[0] + round(columns.stop * scale), offset[1] + round(rows.stop * scale)
    return (left, top, max(1, right - left), max(1, bottom - top))


def _likely_digits(boxes: list[Box], line_height: int) -> int:
    """How many digits the pieces likely hold: one each, a wide one as many as its width holds digits."""
    return sum(max(1, round((columns.stop - columns.start) / (DIGIT_RATIO * max(rows.stop - rows.start, line_height))))
               if _is_wide((rows, columns), line_height) else 1 for rows, columns in boxes)
