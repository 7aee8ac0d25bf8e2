"""Things that are not digits but lie near them: pen glyphs and digit pieces.

A detector that never trained on letters catches about two letters in three, and scribbles no better
(benchmarks/not_a_digit.py --held-out-kinds): the kinds it trained on are either far from a digit (textures,
scenes, noise) or, like the distorted digits, digits spoilt as a whole. These two kinds are drawn like digits,
stroke by stroke or piece by piece, and are still not digits, so a detector trained on them must learn what
makes a digit's strokes a digit rather than what makes a picture look written:

  pen glyphs    one to three pen strokes (lines, arcs, hooks, loops) drawn by the pen that draws the stroke
                digits (`digits.data.synthetic.pen_picture`), sized and placed like a digit
  digit pieces  real digits cut and put together again: the top of one digit over the bottom of another,
                a digit mirrored left to right, a digit with one region of its strokes erased, or the right half
                of one digit beside the left half of another

Each rule that keeps a picture from reading as a digit is written beside the code that applies it; a small
share may still look like one to a person (a mark that a hurried hand could make). Every generator takes a
seed, so the same call draws the same pictures; digit pieces come from the digits given (each part its own).
"""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image
from scipy import ndimage

from digits.data.synthetic import pen_picture

# --- pen glyphs ----------------------------------------------------------------------------------

STROKE_KINDS = ("line", "arc", "hook", "loop")
# Points along each curved stroke: as many as `digits.data.synthetic.arc` gives a digit's skeleton.
CURVE_STEPS = 40


def _curve(centre: np.ndarray, radii: np.ndarray, start: float, span: float) -> np.ndarray:
    """(CURVE_STEPS, 2) points along an elliptical arc in the unit box (y down); angles in radians."""
    angles = start + np.linspace(0.0, span, CURVE_STEPS)
    return centre + radii * np.c_[np.cos(angles), np.sin(angles)]


def _stroke(kind: str, rng: np.random.Generator, *, alone: bool = False) -> np.ndarray:
    """One stroke's (K, 2) points, anywhere in a unit box before the glyph is fitted to it. A stroke drawn alone
    is kept from reading as a 1 or a 0: its arc turns 210-260 degrees (less is a bracket, more an O) and is never
    more than 1.6 times as tall as wide (or wide as tall), and its hook curls by a third of its stem or more."""
    if kind == "line":
        while True:  # A line shorter than a third of the box is a dot under a pen this wide.
            ends = rng.uniform(0.0, 1.0, (2, 2))
            if np.hypot(*(ends[1] - ends[0])) >= 0.35:
                return ends
    if kind == "arc":
        span = rng.uniform(math.radians(210 if alone else 150), math.radians(260 if alone else 270))
        radii = rng.uniform(0.2, 0.45, 2)
        if alone:
            radii[1] = float(np.clip(radii[1], radii[0] / 1.6, radii[0] * 1.6))
        return _curve(rng.uniform(0.3, 0.7, 2), radii, rng.uniform(0, 2 * math.pi), span * rng.choice([-1, 1]))
    if kind == "hook":  # A straight stem that curls at one end, as a J or a walking stick does.
        stem = _stroke("line", rng)
        length = float(np.hypot(*(stem[1] - stem[0])))
        direction = (stem[1] - stem[0]) / length
        side = rng.choice([-1, 1])
        radius = rng.uniform(0.33, 0.5) * length if alone else rng.uniform(0.08, 0.2)
        centre = stem[1] + radius * side * np.array([-direction[1], direction[0]])
        start = math.atan2(stem[1][1] - centre[1], stem[1][0] - centre[0])
        # The curl turns the way the stem was heading, so the pen never doubles back on itself.
        turn = -side * rng.uniform(math.radians(120), math.radians(220))
        return np.r_[stem[:1], _curve(centre, np.array([radius, radius]), start, turn)]
    # A closed loop, a little overlapping where it started, as a pen closes one.
    return _curve(rng.uniform(0.3, 0.7, 2), rng.uniform(0.12, 0.3, 2), rng.uniform(0, 2 * math.pi),
                  math.radians(380) * rng.choice([-1, 1]))


def _stroke_kinds(rng: np.random.Generator) -> list[str]:
    """The kinds of stroke of one glyph, never one a digit is made of:

    - one stroke is an arc or a hook: a single line reads as a 1 and a single loop as a 0;
    - two strokes hold no loop: a loop with a line, hook or arc beside it reads as a 6 or a 9, two as an 8;
    - three strokes hold at most one loop.
    """
    count = int(rng.integers(1, 4))
    if count == 1:
        return [str(rng.choice(["arc", "hook"]))]
    if count == 2:
        return [str(kind) for kind in rng.choice(["line", "arc", "hook"], 2)]
    kinds = [str(kind) for kind in rng.choice(STROKE_KINDS, 3)]
    while kinds.count("loop") > 1:
        kinds[kinds.index("loop")] = str(rng.choice(["line", "arc", "hook"]))
    return kinds


def pen_glyph(rng: np.random.Generator) -> list[list[tuple[float, float]]]:
    """One glyph's strokes, fitted as a whole to the unit box (its longer side filling it), as a digit's
    skeleton is: the pen then sizes and places it like a digit."""
    kinds = _stroke_kinds(rng)
    strokes = [_stroke(kind, rng, alone=len(kinds) == 1) for kind in kinds]
    points = np.concatenate(strokes)
    low, high = points.min(axis=0), points.max(axis=0)
    scale = 0.9 / max(float((high - low).max()), 1e-6)
    offset = 0.5 - scale * (low + high) / 2
    return [[(float(x), float(y)) for x, y in stroke * scale + offset] for stroke in strokes]


def pen_glyph_pictures(count: int, seed: int) -> list[Image.Image]:
    """`count` glyphs of one to three pen strokes (`pen_glyph`), drawn by the stroke digits' pen."""
    rng = np.random.default_rng(seed)
    pen_rng = random.Random(seed)
    return [pen_picture(pen_glyph(rng), pen_rng)[0] for _ in range(count)]


# --- digit pieces --------------------------------------------------------------------------------

# Pieces are cut at 4× MNIST's size, as distorted digits are, so edges stay smooth.
PIECE_SCALE = 4
# What the top and the bottom half of each digit look like in most hands. A top over a bottom is drawn only when
# no digit has a top and a bottom of those two looks (a 9's top over a 4's stem is still a 9). 1 is never used:
# half a 1 is a short line, which any digit may end in.
TOP_LOOKS = {0: "arch", 2: "hook", 3: "hook", 4: "arms", 5: "bar", 6: "left curve", 7: "bar", 8: "loop", 9: "loop"}
BOTTOM_LOOKS = {0: "loop", 2: "base", 3: "bowl", 4: "stem", 5: "bowl", 6: "loop", 7: "stem", 8: "loop", 9: "stem"}
DIGIT_LOOKS = {(TOP_LOOKS[digit], BOTTOM_LOOKS[digit]) for digit in TOP_LOOKS}
# Mirrored left to right, 0, 1 and 8 are still themselves; the others are no digit (a mirrored 6 is not a 9: a
# 9 is a 6 turned, not mirrored).
MIRRORED_NON_DIGITS = (2, 3, 4, 5, 6, 7, 9)
# An erased region may leave another digit: a shortened 1, a 7 without its bar (a 1), an 8 without a side (a 3,
# 6, 9 or 0). Those are never erased.
ERASABLE = (0, 2, 3, 4, 5, 6, 9)
PIECE_WAYS = ("top over bottom", "mirrored", "erased", "halves swapped")


def _one_of(digit_labels: np.ndarray, classes, rng: np.random.Generator) -> int:
    """The index of a random digit of one of `classes` (any digit when the part holds none of them)."""
    candidates = np.flatnonzero(np.isin(digit_labels, classes))
    return int(rng.choice(candidates)) if len(candidates) else int(rng.integers(len(digit_labels)))


def _top_over_bottom_pairs() -> list[tuple[int, int]]:
    return [(top, bottom) for top in TOP_LOOKS for bottom in BOTTOM_LOOKS
            if top != bottom and (TOP_LOOKS[top], BOTTOM_LOOKS[bottom]) not in DIGIT_LOOKS]


def _ink_rows(ink: np.ndarray) -> tuple[int, int]:
    rows = np.flatnonzero(ink.max(axis=1) > 0.2)
    return (int(rows[0]), int(rows[-1]) + 1) if len(rows) else (0, ink.shape[0])


def _inked_columns(ink: np.ndarray) -> np.ndarray:
    columns = np.flatnonzero(ink.max(axis=0) > 0.2)
    return ink[:, columns[0]: columns[-1] + 1] if len(columns) else ink


def digit_piece_pictures(digit_images: np.ndarray, digit_labels: np.ndarray, count: int,
                         seed: int) -> list[Image.Image]:
    """`count` pictures made from (N, 28, 28) uint8 digits (light ink on black), each in one of `PIECE_WAYS`
    in turn, dark ink on light paper half the time."""
    rng = np.random.default_rng(seed)
    pairs = _top_over_bottom_pairs()

    def enlarged(index: int) -> np.ndarray:
        return ndimage.zoom(digit_images[index].astype(np.float32) / 255.0, PIECE_SCALE, order=1)  # (112, 112)

    pictures = []
    for index in range(count):
        way = PIECE_WAYS[index % len(PIECE_WAYS)]
        if way == "top over bottom":  # Each cut at the middle of its own ink, so the halves meet.
            top_digit, bottom_digit = pairs[int(rng.integers(len(pairs)))]
            top, bottom = enlarged(_one_of(digit_labels, [top_digit], rng)), enlarged(
                _one_of(digit_labels, [bottom_digit], rng))
            top_middle, bottom_middle = (sum(_ink_rows(ink)) // 2 for ink in (top, bottom))
            ink = np.zeros_like(top)
            ink[:top_middle] = top[:top_middle]
            ink[top_middle:] = np.roll(bottom, top_middle - bottom_middle, axis=0)[top_middle:]
        elif way == "mirrored":
            ink = enlarged(_one_of(digit_labels, MIRRORED_NON_DIGITS, rng))[:, ::-1]
        elif way == "erased":
            # A disc across the middle of the digit, where its strokes meet, a third to a half of its height wide
            # and taking a fifth of its ink or more: erasing an end would only shorten a stroke.
            ink = enlarged(_one_of(digit_labels, ERASABLE, rng))
            first, last = _ink_rows(ink)
            inked = np.argwhere(ink > 0.5)
            middle = inked.mean(axis=0) if len(inked) else np.array(ink.shape) / 2
            central = inked[np.hypot(*(inked - middle).T) <= 0.25 * (last - first)] if len(inked) else inked
            rows, columns = np.mgrid[: ink.shape[0], : ink.shape[1]]
            for _ in range(20):
                centre = central[int(rng.integers(len(central)))] if len(central) else middle
                radius = rng.uniform(0.17, 0.25) * (last - first)
                kept = np.hypot(rows - centre[0], columns - centre[1]) > radius
                if (ink * ~kept).sum() >= 0.2 * ink.sum():
                    break
            ink = ink * kept
        else:  # A digit's outer edges meet in the middle: the right half of one beside the left half of another.
            right_of, left_of = (enlarged(_one_of(digit_labels, ERASABLE + (7, 8), rng)) for _ in range(2))
            seam = right_of.shape[1] // 2
            halves = [_inked_columns(right_of[:, seam:]), _inked_columns(left_of[:, :seam])]
            gap = np.zeros((right_of.shape[0], int(rng.integers(0, 3)) * PIECE_SCALE), np.float32)
            ink = np.concatenate([halves[0], gap, halves[1]], axis=1)
        grey = np.clip(ink, 0.0, 1.0)
        if rng.random() < 0.5:  # Dark ink on light paper half the time, as photographed.
            grey = 1.0 - grey
        pictures.append(Image.fromarray((grey * 255).astype(np.uint8)))
    return pictures


def near_digit_sets(digit_images: np.ndarray, digit_labels: np.ndarray, seed: int,
                    scale: int = 1) -> dict[str, list[Image.Image]]:
    """The two kinds, 300 pictures each (times `scale`), digit pieces made from the digits given."""
    return {"pen glyphs": pen_glyph_pictures(300 * scale, seed),
            "digit pieces": digit_piece_pictures(digit_images, digit_labels, 300 * scale, seed)}
