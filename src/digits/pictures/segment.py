"""A picture of a number → its digits, each prepared MNIST-style, left to right.

After the clean-up `digits.pictures.prepare` does for one digit (polarity, background, stroke threshold), the
strokes are cut into digits:

1. pieces: connected ink (strokes a pixel or two apart count as connected, as for one digit); the paper's
   edge and specks much smaller than the writing are dropped;
2. joined: pieces whose columns overlap are one digit (the two strokes of a 4 or a 5, a broken loop); pieces no
   wider together than one digit are also read whole, as `prepare_image` reads them, if the classifier reads
   that clearly better than the pieces (WHOLE_PRIOR);
3. split: a piece much wider than tall is several touching digits, cut into candidate stretches with their
   priors (`digits.pictures.candidates`); the classifier (outside this stage) scores them and `choose_digits`
   takes the most confident path;
4. ordered left to right, at most MAX_DIGITS.

`find_digits` gives a `Layout` (every candidate digit, prepared); `choose_digits` picks the digits from the
scores a classifier gives them. A picture found to hold one digit is prepared exactly as `prepare_image` does.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from digits.pictures.candidates import (
    MAX_DIGITS,
    Box,
    Candidate,
    Layout,
    TooManyDigits,
    is_wide,
    layout_candidates,
    picture_box,
    shift_box,
    writing_height,
)
from digits.pictures.decode import NoDigitError, load_image, source_name, to_grey
from digits.pictures.prepare import (
    FIT_SIDE,
    _dilate,
    _frame_edges,
    _nonzero_box,
    ink_on_black,
    ink_threshold,
    prepare_grey,
    remove_background,
)

# What a caller needs: the candidates' types and limits live in `digits.pictures.candidates`.
__all__ = ["MAX_DIGITS", "Candidate", "Layout", "TooManyDigits", "choose_digits", "find_digits", "find_digits_in_file"]

# A piece whose box is both shorter and narrower than this fraction of the tallest piece is a speck.
SPECK_FRACTION = 0.2
# Pieces whose column ranges overlap by this fraction of the narrower one belong to one digit.
JOIN_OVERLAP = 0.3
# Pieces together no wider than one digit (SPLIT_RATIO) may be one digit with a gap in a stroke: the whole picture,
# read as `prepare_image` reads it, competes with reading its pieces, and gains this log-confidence over them.
# Chosen on MNIST *training* digits 50000-59999 (never the test set) drawn as in benchmarks/read_numbers.py: of 4,000
# single digits, those in several pieces read whole beat their pieces by 1.0 or more; of 1,000 numbers a set, the
# whole beat the pieces by at most 0.07 (all but 1 touching number): -0.5 lies between. A digit with a hairline
# fragment read as a confident "1" (a 9's thin tail) beats its pieces by only about 0.1, as some numbers do: it
# stays split.
WHOLE_PRIOR = -0.5


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
        whole = Candidate(0, 1, picture_box((slice(top, bottom), slice(left, right)), scale, (0, 0)), view)
        if not is_wide(boxes[0], writing_height(boxes)):
            return Layout((whole,), 1)
        return layout_candidates(residual, strokes, boxes, threshold, scale, (0, 0), label, whole)
    offset = (0, 0)
    whole_picture = None
    if not is_wide(_union_all(boxes), 0):
        # Pieces no wider together than one digit may be one digit with a gap in a stroke: the whole picture read
        # as `prepare_image` reads it is one more choice, spanning every piece.
        view, (top, bottom, left, right) = prepare_grey(image, grey, label, residual, threshold)
        whole_picture = (picture_box((slice(top, bottom), slice(left, right)), scale, (0, 0)), view)
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
    layout = layout_candidates(residual, strokes, boxes, threshold, scale, offset, label)
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
    found = [None if box is None else shift_box(box, *around) for box in ndimage.find_objects(groups)]
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
