"""Where touching digits meet: cut paths from the top of a wide piece of ink to its bottom.

Digits written close overlap: a straight vertical cut between them slices a stroke of each, and the two halves
read badly. A cut path may drift sideways, one column a row at most and within CUT_BAND of the line height of
its centre column, so it goes round strokes and crosses ink only where the digits really touch (or where it must
cut through a digit). Every column of the piece is the centre of one path, the one crossing the least ink (dynamic
programming over the rows, all centres at once); the paths crossing least ink are candidate cuts, and so are the
straight columns of least ink (`find_cuts` takes those of both kinds crossing fewest strokes). A cut's cost is
the number of strokes it crosses: the ink on it over the stroke width. Two digits touching at one point cost
about one stroke; a cut through the middle of a 0 costs two.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# How far a cut path may drift either side of its centre column: a share of the line height. Touching digits
# overlap by up to about a sixth of a digit's width, and slanted writing leans further at the top than the bottom.
CUT_BAND = 0.15
# Ink crossed, in pixels, that one column of sideways drift costs: among paths crossing as much ink, the
# straightest.
DRIFT_COST = 0.05
# Paths are searched on the piece shrunk to at most this many rows (its blocks' maximum), so the search costs the
# same on a big picture as on a small one: (rows, width, band) steps, a few milliseconds.
SEARCH_ROWS = 64


@dataclass(frozen=True, eq=False)
class Cut:
    """A path from the top of a piece to its bottom: the columns left of `columns[row]` are left of the cut."""

    columns: np.ndarray  # (h,) int, one column a row
    strokes_crossed: float  # the ink on the path over the stroke width: about how many strokes it cuts
    position: float = field(init=False)  # the path's mean column, to order cuts left to right

    def __post_init__(self) -> None:
        object.__setattr__(self, "position", float(self.columns.mean()))


def edge_cut(height: int, column: int) -> Cut:
    """A straight path at `column` that cuts nothing: a piece's left (0) or right (its width) edge."""
    return Cut(np.full(height, column, np.int64), 0.0)


def find_cuts(piece: np.ndarray, line_height: int, *, margin: int, spacing: int, limit: int) -> list[Cut]:
    """Where touching digits in a piece (h, w) bool may meet, left to right: the `limit` cuts crossing fewest strokes
    among the cut paths crossing least ink (`path_cuts`) and the straight columns of least ink (`column_cuts`), a
    column kept only at least half `spacing` from every path.

    Both kinds are needed: a path goes round the strokes of digits that merely touch, and a straight cut through
    the middle of a stroke two digits share is often the one that leaves each digit whole.
    """
    chosen = path_cuts(piece, line_height, margin=margin, spacing=spacing, limit=limit)
    paths = [cut.position for cut in chosen]
    for cut in column_cuts(piece, margin=margin, spacing=spacing, limit=limit):
        if all(abs(cut.position - position) >= spacing / 2 for position in paths):
            chosen.append(cut)
    chosen = sorted(chosen, key=lambda cut: cut.strokes_crossed)[:limit]
    return sorted(chosen, key=lambda cut: cut.position)


def column_cuts(piece: np.ndarray, *, margin: int, spacing: int, limit: int) -> list[Cut]:
    """Straight cuts at the local minima of the piece's ink per column, the least inked first, at least `margin`
    columns from either edge and `spacing` apart, at most `limit` of them."""
    height, width = piece.shape
    ink = piece.sum(axis=0).astype(np.float64)  # (w,) ink per column
    ink = np.convolve(ink, np.ones(3) / 3, mode="same")  # A stroke's crossing, not a single column's luck.
    inside = np.arange(margin, width - margin)
    if inside.size == 0:
        return []
    left, right = ink[inside - 1], ink[np.minimum(inside + 1, width - 1)]
    minima = inside[(ink[inside] <= left) & (ink[inside] <= right)]
    stroke = stroke_width(piece)
    chosen: list[int] = []
    for column in minima[np.argsort(ink[minima], kind="stable")].tolist():
        if all(abs(column - other) >= spacing for other in chosen):
            chosen.append(column)
        if len(chosen) == limit:
            break
    return [Cut(np.full(height, column, np.int64), float(piece[:, column].sum()) / stroke) for column in chosen]


def path_cuts(piece: np.ndarray, line_height: int, *, margin: int, spacing: int, limit: int) -> list[Cut]:
    """The cut paths crossing least ink in a piece (h, w) bool, left to right: centres at least `margin` columns in
    from either edge, paths whose mean columns are at least `spacing` apart, at most `limit` of them."""
    height, width = piece.shape
    if width - 2 * margin <= 0:
        return []
    factor = -(-height // SEARCH_ROWS)
    paths = _least_ink_paths(_shrink(piece, factor), line_height / factor, margin / factor)
    stroke = stroke_width(piece)
    chosen: list[Cut] = []
    for _, small_path in paths:
        path = np.minimum(np.repeat(small_path * factor + factor // 2, factor)[:height], width - 1)
        cut = Cut(path, float(piece[np.arange(height), path].sum()) / stroke)
        if all(abs(cut.position - other.position) >= spacing for other in chosen):
            chosen.append(cut)
        if len(chosen) == limit:
            break
    return sorted(chosen, key=lambda cut: cut.position)


def _shrink(piece: np.ndarray, factor: int) -> np.ndarray:
    """A bool piece shrunk `factor` times: each block of factor × factor pixels is ink if any of it is."""
    if factor == 1:
        return piece
    height, width = piece.shape
    padded = np.zeros((-(-height // factor) * factor, -(-width // factor) * factor), bool)
    padded[:height, :width] = piece
    blocks = padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor)
    return np.asarray(blocks.any(axis=(1, 3)))


def _least_ink_paths(piece: np.ndarray, line_height: float, margin: float):
    """(centre, path) of the paths crossing least ink, the least first: one for each column whose path crosses no
    more ink than its neighbours' (a local minimum), at least `margin` columns in from either edge."""
    height, width = piece.shape
    band = max(1, round(CUT_BAND * line_height))
    ink = piece.astype(np.float64)  # (h, w)
    # Column of each (centre, offset): the centres are every column, the offsets -band..band.
    offsets = np.arange(-band, band + 1)
    columns = np.arange(width)[:, np.newaxis] + offsets[np.newaxis, :]  # (w, 2 band + 1)
    # A path stays half a narrowest digit in from either edge: nearer, it would cut nothing worth reading off.
    outside = (columns < margin / 2) | (columns >= width - margin / 2)
    safe = np.clip(columns, 0, width - 1)
    cost = np.where(outside, np.inf, ink[0][safe])  # (w, 2 band + 1): the best path so far ending at each column
    moves = np.empty((height, width, offsets.size), np.int8)  # each step: from the offset -1, 0 or +1 of this one
    moves[0] = 0
    for row in range(1, height):
        from_left = np.concatenate([np.full((width, 1), np.inf), cost[:, :-1]], axis=1) + DRIFT_COST
        from_right = np.concatenate([cost[:, 1:], np.full((width, 1), np.inf)], axis=1) + DRIFT_COST
        choices = np.stack([from_left, cost, from_right])  # (3, w, 2 band + 1)
        best = np.argmin(choices, axis=0)
        moves[row] = best - 1
        cost = np.where(outside, np.inf, ink[row][safe] + np.take_along_axis(choices, best[np.newaxis], 0)[0])
    total = cost.min(axis=1)  # (w,) the least ink a path centred on each column crosses
    ends = cost.argmin(axis=1)
    inside = np.arange(max(1, round(margin)), width - max(1, round(margin)))
    if inside.size == 0:
        return
    left, right = total[inside - 1], total[np.minimum(inside + 1, width - 1)]
    minima = inside[(total[inside] <= left) & (total[inside] <= right)]
    for centre in minima[np.argsort(total[minima], kind="stable")].tolist():
        path = np.empty(height, np.int64)
        offset = int(ends[centre])
        for row in range(height - 1, -1, -1):
            path[row] = centre + offsets[offset]
            offset += int(moves[row, centre, offset])  # The offset it came from in the row above.
        yield centre, path


def stroke_width(strokes: np.ndarray) -> float:
    """The strokes' typical width in pixels: their area over half their outline (a stroke w wide and L long has an
    area of wL and an outline of about 2L)."""
    area = int(strokes.sum())
    if area == 0:
        return 1.0
    padded = np.pad(strokes, 1)  # Ink at the crop's edge has paper beyond it.
    inner = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    outline = area - int(inner.sum())
    return max(1.0, 2.0 * area / max(outline, 1))


def between(left: Cut, right: Cut, start: int, stop: int) -> np.ndarray:
    """(h, stop - start) bool: which pixels of the columns start..stop are right of the `left` cut and left of the
    `right` one."""
    columns = np.arange(start, stop)[np.newaxis, :]
    return (columns >= left.columns[:, np.newaxis]) & (columns < right.columns[:, np.newaxis])
