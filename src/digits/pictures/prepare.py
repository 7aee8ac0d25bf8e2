"""The ink in a grey picture, shaped like an MNIST digit: steps 2–6 of `digits.pictures.prepare.prepare_image`.

Arrays in, arrays out: float32 images in [0, 1], the last step returns (28, 28) uint8. The numbers below
were measured on MNIST's test set (`benchmarks/font_digits.py` shows what they buy on other digits).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from digits.data.mnist import IMAGE_SIDE
from digits.pictures.decode import NoDigitError, load_image, otsu, source_name, to_grey

# The digit is thickened and shrunk at this side: 4× the final 20 pixels, so dilation is cheap and exact.
FIT_SIDE = 80
# MNIST fits each digit in a 20×20 box inside a 28×28 field, centre of mass at (14, 14) (measured: 13.99, 14.01).
BOX_SIDE = 20
# Ink must differ from the paper by at least this much (on a 0–1 scale) to count as a digit.
MIN_CONTRAST = 0.1
# MNIST strokes are about 2.6 pixels wide at 20×20 (median over the test set); thinner ones are thickened.
MIN_STROKE_WIDTH = 1.8
TARGET_STROKE_WIDTH = 2.6
# Bolder strokes than this (MNIST's 90th percentile is 3.7) are thinned to it.
MAX_STROKE_WIDTH = 3.5
# Marks smaller than this fraction of the largest one are specks, not parts of the digit.
MIN_PART_FRACTION = 0.05
# A largest mark of fewer stroke pixels than this is no digit.
MIN_MARK_PIXELS = 4


def ink_on_black(grey: np.ndarray) -> np.ndarray:
    """Return the picture with light ink on dark paper, inverting dark-on-light pictures.

    The paper is what the border mostly shows; the ink is the extreme (after a light blur that ignores
    single noisy pixels) farther from the paper. Comparing with the extremes, not a global threshold,
    keeps working when the lighting is uneven or the digit is tiny.
    """
    if paper_is_light(grey):
        return 1.0 - grey
    return grey


def paper_is_light(grey: np.ndarray) -> bool:
    height, width = grey.shape
    frame = max(1, round(0.03 * min(height, width)))
    border = np.concatenate(
        [grey[:frame].ravel(), grey[-frame:].ravel(), grey[:, :frame].ravel(), grey[:, -frame:].ravel()]
    )
    paper = float(np.median(border))
    # Paper at one extreme of the picture (a canvas drawing) decides it without the blur, which only
    # narrows the range: ink 0.01 beyond the paper still ends at least 0.0016 beyond it once blurred.
    lowest, highest = float(grey.min()), float(grey.max())
    if paper >= highest and paper - lowest > 0.01:
        return True
    if paper <= lowest and highest - paper > 0.01:
        return False
    smooth = ndimage.gaussian_filter(grey, 1.0, truncate=2.0) if min(height, width) >= 8 else grey
    darkest, lightest = float(smooth.min()), float(smooth.max())
    return (paper - darkest) > (lightest - paper)


# --- 3. background -----------------------------------------------------------------------------------


def remove_background(ink: np.ndarray) -> np.ndarray:
    """Subtract a large-scale estimate of the paper: shadows and gradients go, strokes stay.

    The estimate is a grey opening (strokes narrower than a third of the picture vanish from it) on a
    64-pixel copy, blurred and scaled back up; the difference is the ink above the local paper.
    """
    height, width = ink.shape
    scale = min(1.0, 64 / max(height, width))
    small_size = (max(1, round(height * scale)), max(1, round(width * scale)))
    small = _resize_to(ink, small_size, Image.Resampling.BOX)
    size = max(3, round(max(small_size) / 3))
    # The opening is this erosion followed by a dilation.
    eroded = ndimage.grey_erosion(small, size=(size, size), mode="nearest")
    if not eroded.any():
        # The paper is exactly black (a canvas drawing): the estimate would be 0 everywhere.
        return np.clip(ink, 0.0, 1.0)
    paper = ndimage.grey_dilation(eroded, size=(size, size), mode="nearest")
    paper = ndimage.gaussian_filter(paper, size / 4, mode="nearest")
    paper = _resize_to(paper, (height, width), Image.Resampling.BILINEAR)
    return np.clip(ink - paper, 0.0, 1.0)


# --- 4. ink ------------------------------------------------------------------------------------------


def find_ink(residual: np.ndarray, threshold: float | None = None,
             one_mark: np.ndarray | None = None) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """The digit's ink, cropped and scaled so strokes are 1 and paper 0, and its box (top, bottom, left,
    right) in `residual`; None when there is no ink.

    `one_mark`: the strokes (`residual > threshold` without the frame's edges), when the caller found them to be
    one mark, strokes a pixel apart joined (`digits.pictures.segment` does): the marks grouped here, further
    apart, are then that one too, so they are not looked for again (the same ink, 0.15 ms less on a drawing).

    The local filters run only around the non-zero pixels, with a margin as wide as each filter reaches,
    so they give what they give on the whole picture: on a canvas drawing, whose paper is exactly 0, they
    see about half of it.
    """
    height, width = residual.shape
    threshold = ink_threshold(residual) if threshold is None else threshold  # Given by a caller that knows it.
    if threshold is None:
        return None
    # Pieces a few pixels apart (a broken pen line) are grouped into one mark.
    gap = max(1, round(0.01 * max(height, width)))
    if one_mark is None:
        strokes = residual > threshold
        strokes &= ~_frame_edges(strokes)
        around = _nonzero_box(strokes, margin=gap)
        kept = _digit_parts(strokes[around], gap)  # In the coordinates of `around`.
    else:
        around = _nonzero_box(one_mark, margin=gap)
        kept = one_mark[around]
        kept = kept if np.count_nonzero(kept) >= MIN_MARK_PIXELS else None  # As `_digit_parts` drops it.
    if kept is None:
        return None
    first_row, first_column = around[0].start, around[1].start
    rows = first_row + np.flatnonzero(kept.any(axis=1))
    columns = first_column + np.flatnonzero(kept.any(axis=0))
    top, bottom = max(rows[0] - 1, 0), min(rows[-1] + 2, height)
    left, right = max(columns[0] - 1, 0), min(columns[-1] + 2, width)
    kept = kept[top - first_row : bottom - first_row, left - first_column : right - first_column]
    residual = residual[top:bottom, left:right]
    # Anti-aliased edges next to kept strokes belong to the digit; everything else is paper.
    near = _dilate(kept, 2)
    level = upper_quartile(residual[kept])  # Typical stroke ink, not one bright speck.
    floor = 0.5 * threshold
    ink = np.clip((residual - floor) / max(level - floor, 1e-6), 0.0, 1.0) * near
    return ink, (top, bottom, left, right)


def upper_quartile(values: np.ndarray) -> float:
    """`float(np.percentile(values, 75))` of a 1-D float32 array, bit for bit (its linear interpolation, in float32),
    at a tenth of its cost: one partition, no checks of the arguments."""
    position = 0.75 * (values.size - 1)
    below = int(position)
    above = min(below + 1, values.size - 1)
    ordered = np.partition(values, (below, above))
    low, high = ordered[below], ordered[above]
    weight = position - below
    step = high - low
    # NumPy's _lerp: from the nearer end, so that a weight of 1 would give `high` exactly.
    return float(high - step * (1 - weight)) if weight >= 0.5 else float(low + step * weight)


def ink_threshold(residual: np.ndarray) -> float | None:
    """The level above which `residual` is stroke (Otsu's, kept within a band below the peak); None: no ink."""
    height, width = residual.shape
    if min(height, width) >= 8:
        around = _nonzero_box(residual, margin=2)  # The blur reaches 2 pixels.
        peak = float(ndimage.gaussian_filter(residual[around], 1.0, truncate=2.0).max())
    else:
        peak = float(residual.max())
    if peak < MIN_CONTRAST:
        return None
    return min(max(otsu(residual)[0], 0.2 * peak), 0.6 * peak)


def _nonzero_box(values: np.ndarray, margin: int) -> tuple[slice, slice]:
    """Rows and columns around every non-zero value, `margin` wider on each side within the picture."""
    rows = np.flatnonzero(values.any(axis=1))
    if rows.size == 0:
        return slice(0, values.shape[0]), slice(0, values.shape[1])
    # The columns are looked for only in the rows that hold something: the same columns, from a fraction of a
    # drawing's pixels.
    columns = np.flatnonzero(values[rows[0] : rows[-1] + 1].any(axis=0))
    return (
        slice(max(int(rows[0]) - margin, 0), min(int(rows[-1]) + 1 + margin, values.shape[0])),
        slice(max(int(columns[0]) - margin, 0), min(int(columns[-1]) + 1 + margin, values.shape[1])),
    )


def _frame_edges(strokes: np.ndarray) -> np.ndarray:
    """Marks that run along the picture's edge (the paper's edge, a table, a scanner lid), not ink."""
    if not (strokes[0].any() or strokes[-1].any() or strokes[:, 0].any() or strokes[:, -1].any()):
        return np.zeros_like(strokes)  # Nothing touches the edge (a canvas drawing, most photos).
    labels, count = ndimage.label(strokes, structure=np.ones((3, 3)))
    if count == 0:
        return np.zeros_like(strokes)
    height, width = strokes.shape
    edges = set()
    for side, length in ((labels[0], width), (labels[-1], width), (labels[:, 0], height), (labels[:, -1], height)):
        ids, counts = np.unique(side[side > 0], return_counts=True)
        edges.update(ids[counts > 0.5 * length].tolist())
    at_edge = np.zeros(count + 1, bool)
    at_edge[list(edges)] = True
    at_edge[0] = False
    return at_edge[labels]


def _digit_parts(strokes: np.ndarray, gap: int) -> np.ndarray | None:
    """Keep the largest mark and the sizeable marks near it; drop specks and far-away marks.

    Pieces up to `gap` pixels apart count as one mark.
    """
    grouped = _dilate(strokes, gap)
    groups, count = ndimage.label(grouped, structure=np.ones((3, 3)))
    if count == 0:
        return None
    groups = groups * strokes
    areas = np.bincount(groups.ravel(), minlength=count + 1)[1:]
    largest = int(areas.max())
    if largest < MIN_MARK_PIXELS:
        return None
    boxes = ndimage.find_objects(groups)
    candidates = [index for index in range(count) if areas[index] >= MIN_PART_FRACTION * largest]
    main = int(np.argmax(areas))
    top, bottom = boxes[main][0].start, boxes[main][0].stop
    left, right = boxes[main][1].start, boxes[main][1].stop
    chosen = {main}
    # Grow the digit by marks within a quarter of its size, until nothing more is that close.
    changed = True
    while changed:
        changed = False
        margin = 0.25 * max(bottom - top, right - left)
        for index in candidates:
            if index in chosen or boxes[index] is None:
                continue
            rows, columns = boxes[index]
            if (
                rows.start <= bottom + margin
                and rows.stop >= top - margin
                and columns.start <= right + margin
                and columns.stop >= left - margin
            ):
                chosen.add(index)
                top, bottom = min(top, rows.start), max(bottom, rows.stop)
                left, right = min(left, columns.start), max(right, columns.stop)
                changed = True
    chosen_labels = np.zeros(count + 1, bool)
    chosen_labels[[index + 1 for index in chosen]] = True
    return chosen_labels[groups]


def _dilate(mask: np.ndarray, reach: int) -> np.ndarray:
    """Grow a boolean mask by `reach` pixels in every direction (a square), within the picture.

    Shifted ORs along each axis in turn: what a maximum filter gives, at a fifth of SciPy's cost on a drawing.
    """
    grown = mask.copy()
    for shift in range(1, reach + 1):
        grown[shift:] |= mask[:-shift]
        grown[:-shift] |= mask[shift:]
    rows_grown = grown.copy()
    for shift in range(1, reach + 1):
        grown[:, shift:] |= rows_grown[:, :-shift]
        grown[:, :-shift] |= rows_grown[:, shift:]
    return grown


# --- 5. fit ------------------------------------------------------------------------------------------


def fit_box(ink: np.ndarray) -> np.ndarray:
    """Shrink (or enlarge) the digit so its longer side is BOX_SIDE, keeping strokes visibly thick."""
    ink = _resize(ink, FIT_SIDE / max(ink.shape))
    peak = float(ink.max())
    if peak > 0:
        ink = ink / peak  # Strokes thinner than a pixel at this size are grey; count them as full ink.
    width = _stroke_width(ink > 0.5) * BOX_SIDE / FIT_SIDE
    if width < MIN_STROKE_WIDTH:
        radius = (TARGET_STROKE_WIDTH - width) / 2 * FIT_SIDE / BOX_SIDE
        ink = np.pad(ink, int(np.ceil(radius)) + 1)
        ink = ndimage.grey_dilation(ink, footprint=_disk(radius))
        ink = _crop_to_ink(ink)
    elif width > MAX_STROKE_WIDTH:
        # Bold strokes fill MNIST's small box and hide the shape (a bold 1 with a foot looks like a 2).
        radius = (width - MAX_STROKE_WIDTH) / 2 * FIT_SIDE / BOX_SIDE
        thinned = ndimage.grey_erosion(ink, footprint=_disk(radius))
        # Unless that would break a hairline (a bold serif font's thin strokes), so the shape changes.
        if ndimage.label(thinned > 0.5)[1] == ndimage.label(ink > 0.5)[1]:
            ink = _crop_to_ink(thinned)
    digit = np.maximum(_resize(ink, BOX_SIDE / max(ink.shape)), 0.0)
    peak = float(digit.max())
    return digit / peak if peak > 0 else digit  # Stretch the contrast: the strongest stroke is 255.


def _resize(pixels: np.ndarray, scale: float) -> np.ndarray:
    """Anti-aliased resize of a float image: area averaging to shrink (no ringing), Lanczos to enlarge."""
    height, width = pixels.shape
    method = Image.Resampling.BOX if scale < 1 else Image.Resampling.LANCZOS
    return _resize_to(pixels, (max(1, round(height * scale)), max(1, round(width * scale))), method)


def _resize_to(pixels: np.ndarray, shape: tuple[int, int], method=Image.Resampling.LANCZOS) -> np.ndarray:
    if pixels.shape == shape:
        return pixels
    # Pillow's 32-bit float mode holds the array's bytes as they are: copied in and out, without fromarray's and
    # __array_interface__'s checks (a third of the cost of a digit's resize).
    height, width = pixels.shape
    image = Image.frombytes("F", (width, height), np.ascontiguousarray(pixels, dtype=np.float32).tobytes())
    resized = image.resize((shape[1], shape[0]), method).tobytes()
    return np.frombuffer(resized, np.float32).reshape(shape)


def _stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width in pixels: twice the area over the boundary length (a stroke has two sides)."""
    area = int(mask.sum())
    if area == 0:
        return 0.0
    boundary = int((mask & ~_erode_cross(mask)).sum())
    return 2.0 * area / max(boundary, 1)


def _erode_cross(mask: np.ndarray) -> np.ndarray:
    """The pixels of a boolean mask whose four neighbours are in it too (outside the picture counts as out),
    as SciPy's binary_erosion gives, at a fraction of its cost on a digit."""
    inside = np.zeros_like(mask)
    inside[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    return inside


def _disk(radius: float) -> np.ndarray:
    reach = int(np.ceil(radius))
    rows, columns = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    return rows**2 + columns**2 <= radius**2 + 0.25


def _crop_to_ink(ink: np.ndarray) -> np.ndarray:
    rows, columns = np.nonzero(ink > 0.02)
    if rows.size == 0:
        return ink
    return ink[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]


# --- 6. centre ---------------------------------------------------------------------------------------


def centre_in_field(digit: np.ndarray) -> np.ndarray:
    """Place the digit in IMAGE_SIDE² so its centre of mass is at the centre, as MNIST did (whole pixels)."""
    height, width = digit.shape
    total = digit.sum()
    if total > 0:
        # SciPy's center_of_mass, the same sums in the same order, without its checks: each coordinate weighted by
        # the ink there (in float64), over the ink's float32 sum.
        centre_row = (digit * np.arange(height, dtype=float)[:, np.newaxis]).sum() / total
        centre_column = (digit * np.arange(width, dtype=float)[np.newaxis, :]).sum() / total
    else:
        centre_row, centre_column = height / 2, width / 2
    middle = IMAGE_SIDE / 2
    top = min(max(round(middle - centre_row), 0), IMAGE_SIDE - height)
    left = min(max(round(middle - centre_column), 0), IMAGE_SIDE - width)
    field = np.zeros((IMAGE_SIDE, IMAGE_SIDE), np.float32)
    field[top : top + height, left : left + width] = digit
    return np.round(np.clip(field, 0.0, 1.0) * 255).astype(np.uint8)


def prepare_file(source: str | Path | bytes, *, name: str | None = None) -> np.ndarray:
    """`load_image` then `prepare_image`: a picture file or its bytes → (28, 28) uint8, MNIST-style."""
    label = source_name(source, name)
    return prepare_image(load_image(source, name=label), name=label)


def prepare_image(image: Image.Image, *, name: str | None = None) -> np.ndarray:
    """Any picture of one digit → (28, 28) uint8, light ink (255) on black (0), as MNIST was prepared.

    Raises NoDigitError naming the picture when it holds no ink (blank, uniform or noise only).
    """
    label = name or getattr(image, "filename", "") or "the image"
    grey = to_grey(image, label)  # (H, W) float32 in [0, 1], at most WORK_SIDE on a side
    return prepare_grey(image, grey, label)[0]


def prepare_grey(image: Image.Image, grey: np.ndarray, label: str, residual: np.ndarray | None = None,
                 threshold: float | None = None,
                 one_mark: np.ndarray | None = None) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """`prepare_image` on the picture's grey (`to_grey`), and, if known already, its residual ink
    (`remove_background(ink_on_black(grey))`), `ink_threshold` and its strokes when they are one mark (`find_ink`):
    the (28, 28) view and the digit's box (top, bottom, left, right) in `grey`'s pixels."""
    found = find_ink(residual, threshold, one_mark) if residual is not None else _find_digit(grey)
    if found is None:
        raise NoDigitError(f"no digit found in {label}: the picture is blank or has too little contrast.")
    strokes, (top, bottom, left, right) = found
    scale = image.width / grey.shape[1]
    if scale > 1 and max(bottom - top, right - left) < FIT_SIDE:
        # A small digit in a big picture: read it again from the original pixels around it.
        margin = max(bottom - top, right - left)
        height, width = grey.shape
        around = (max(0, left - margin), max(0, top - margin), min(width, right + margin), min(height, bottom + margin))
        closer = _find_digit(to_grey(image.crop(tuple(round(edge * scale) for edge in around))))
        if closer is not None:
            strokes = closer[0]
    digit = fit_box(strokes)  # (h, w) float32 in [0, 1], longer side 20
    return centre_in_field(digit), (top, bottom, left, right)


def _find_digit(grey: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    light_ink = ink_on_black(grey)  # light ink on dark, whatever the picture's polarity
    residual = remove_background(light_ink)  # paper ≈ 0, ink > 0, lighting evened out
    return find_ink(residual)  # cropped to the digit, strokes ≈ 1; and where it was


def is_dark_on_light(image: Image.Image) -> bool:
    """Whether the picture shows dark ink on light paper (the polarity `prepare_image` detects)."""
    return paper_is_light(to_grey(image))
