"""More varied things that are not digits: distorted digits, procedural textures, and crops of generated scenes.

The four kinds of `digits.data.synthetic` (letters and symbols, scribbles, shapes, noise) are what a detector
trained on them recognises; a kind it never saw it catches far less often (benchmarks/not_a_digit.py measures
each kind with a detector that never trained on it). These three add what lies between a digit and a clear
non-digit, after Hendrycks & Gimpel's abnormality module (trained against distorted digits):

  distorted digits  MNIST-style digits heavily noised, blurred, rotated 60-120 degrees either way, cut in half,
                    or two different digits laid over each other
  textures          stripes, checkerboards, gradients and smooth random blobs ("Perlin-ish"), grey or coloured
  scene crops       random windows of a generated scene: letters, shapes, strokes and textures on a shaded ground

Every generator takes a seed, so the same call draws the same pictures; arrays in, PIL pictures out.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

from digits.data.synthetic import NON_DIGIT_CHARACTERS, random_colours, render_glyph

# Digits are drawn 4× MNIST's size, so the distortions act on smooth strokes, as on a photographed digit.
DISTORTION_SCALE = 4
# Rotations of 60-120 degrees (either way) leave no digit upright; 180 is left out: a turned 6 is a 9.
ROTATION_DEGREES = (60.0, 120.0)


def distorted_digit_pictures(digit_images: np.ndarray, digit_labels: np.ndarray, count: int,
                             seed: int) -> list[Image.Image]:
    """`count` pictures made from (N, 28, 28) uint8 digits (light ink on black), each distorted in one of five ways.

    A cut or overlay never uses a 1: half a 1, or a 1 across another digit, is still read as a digit by people.
    """
    rng = np.random.default_rng(seed)
    not_one = np.flatnonzero(digit_labels != 1)
    pictures = []
    for index in range(count):
        way = index % 5
        first_index = rng.choice(not_one) if way >= 3 else rng.integers(len(digit_images))
        first = digit_images[first_index]
        ink = ndimage.zoom(first.astype(np.float32) / 255.0, DISTORTION_SCALE, order=1)  # (112, 112)
        if way == 0:  # Heavily noised: strong grey noise plus specks, the digit still underneath.
            ink = ink + rng.normal(0.0, rng.uniform(0.35, 0.6), ink.shape)
            ink[rng.random(ink.shape) < rng.uniform(0.05, 0.15)] = 1.0
        elif way == 1:  # Blurred into a blob.
            ink = ndimage.gaussian_filter(ink, rng.uniform(2.5, 4.0) * DISTORTION_SCALE)
            ink = ink / max(float(ink.max()), 1e-6)
        elif way == 2:
            degrees = rng.uniform(*ROTATION_DEGREES) * rng.choice([-1, 1])
            ink = ndimage.rotate(ink, degrees, reshape=False, order=1)
        elif way == 3:  # One side of a line through the middle, at any angle.
            rows, columns = np.mgrid[: ink.shape[0], : ink.shape[1]] - ink.shape[0] / 2
            angle = rng.uniform(0, 2 * math.pi)
            ink = ink * ((rows * math.cos(angle) + columns * math.sin(angle)) > 0)
        else:  # Two different digits on top of each other, a little apart.
            second_label = rng.choice([label for label in range(10) if label not in (1, digit_labels[first_index])])
            candidates = np.flatnonzero(digit_labels == second_label)
            second = digit_images[rng.choice(candidates)] if len(candidates) else first[::-1]
            shift = rng.integers(-4, 5, 2) * DISTORTION_SCALE
            other = np.roll(ndimage.zoom(second.astype(np.float32) / 255.0, DISTORTION_SCALE, order=1), shift, (0, 1))
            ink = np.maximum(ink, other)
        grey = np.clip(ink, 0.0, 1.0)
        if rng.random() < 0.5:  # Dark ink on light paper half the time, as photographed.
            grey = 1.0 - grey
        pictures.append(Image.fromarray((grey * 255).astype(np.uint8)))
    return pictures


def texture(rng: np.random.Generator, side: int) -> np.ndarray:
    """One (side, side) float texture in [0, 1]: stripes, a checkerboard, a gradient, or smooth random blobs."""
    rows, columns = np.mgrid[:side, :side].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    along = columns * math.cos(angle) + rows * math.sin(angle)
    across = -columns * math.sin(angle) + rows * math.cos(angle)
    kind = rng.integers(4)
    if kind == 0:
        period = rng.uniform(4, side / 2)
        values = 0.5 + 0.5 * np.sin(2 * math.pi * along / period)
        return (values > 0.5).astype(np.float32) if rng.random() < 0.5 else values
    if kind == 1:
        cell = rng.uniform(4, side / 3)
        return ((np.floor(along / cell) + np.floor(across / cell)) % 2).astype(np.float32)
    if kind == 2:
        if rng.random() < 0.5:
            values = along
        else:  # A radial gradient around a random centre.
            values = np.hypot(rows - rng.uniform(0, side), columns - rng.uniform(0, side))
        values = (values - values.min()) / max(float(np.ptp(values)), 1e-6)
        steps = rng.integers(0, 6)  # Banded, as a cheap photo or a poster shows.
        return np.floor(values * steps) / steps if steps >= 2 else values
    # Smooth random blobs: octaves of upscaled noise, each half as strong as the last.
    values = np.zeros((side, side), np.float32)
    for octave in range(4):
        cells = 2 ** (octave + 2)
        coarse = rng.random((cells, cells)).astype(np.float32)
        values += ndimage.zoom(coarse, side / cells, order=3)[:side, :side] / 2**octave
    values = (values - values.min()) / max(float(np.ptp(values)), 1e-6)
    return (values > rng.uniform(0.4, 0.7)).astype(np.float32) if rng.random() < 0.3 else values


def texture_pictures(count: int, seed: int) -> list[Image.Image]:
    """Textures 48-256 pixels square, grey or painted between two random colours."""
    rng = np.random.default_rng(seed)
    pictures = []
    for _ in range(count):
        values = texture(rng, int(rng.integers(48, 257)))
        pictures.append(_painted(values, rng))
    return pictures


def _painted(values: np.ndarray, rng: np.random.Generator) -> Image.Image:
    if rng.random() < 0.5:
        return Image.fromarray((values * 255).astype(np.uint8))
    ink, paper = random_colours(_python_rng(rng), dark_on_light=bool(rng.random() < 0.5))
    colours = np.asarray(paper, np.float32) + values[..., np.newaxis] * (np.asarray(ink, np.float32) -
                                                                        np.asarray(paper, np.float32))
    return Image.fromarray(colours.astype(np.uint8), "RGB")


def _python_rng(rng: np.random.Generator):
    import random

    return random.Random(int(rng.integers(2**32)))


SCENE_SIDE = 400


def scene(fonts: list[Path], rng: np.random.Generator) -> Image.Image:
    """A 400×400 scene with no digit in it: a shaded ground, textured patches, shapes, strokes and letters."""
    ground = texture(rng, SCENE_SIDE) * rng.uniform(0.1, 0.4) + rng.uniform(0.3, 0.6)
    picture = Image.fromarray((ground * 255).astype(np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(picture)
    for _ in range(int(rng.integers(6, 14))):
        colour = tuple(int(value) for value in rng.integers(0, 256, 3))
        left, top = (int(value) for value in rng.integers(-40, SCENE_SIDE - 20, 2))
        size = int(rng.integers(20, 160))
        what = rng.integers(5)
        if what == 0:
            patch = _painted(texture(rng, size), rng).convert("RGB")
            picture.paste(patch, (left, top))
        elif what == 1:
            draw.ellipse((left, top, left + size, top + size * rng.uniform(0.4, 1.0)), fill=colour,
                         outline=None if rng.random() < 0.5 else (0, 0, 0), width=int(rng.integers(1, 6)))
        elif what == 2:
            points = [tuple(point) for point in (left + rng.uniform(0, size, (int(rng.integers(3, 7)), 2)))]
            draw.polygon(points, fill=colour)
        elif what == 3:
            points = [tuple(point) for point in (left + rng.uniform(0, size, (int(rng.integers(2, 6)), 2)))]
            draw.line(points, fill=colour, width=int(rng.integers(2, 12)), joint="curve")
        elif fonts:
            font = fonts[int(rng.integers(len(fonts)))]
            text = "".join(rng.choice(list(NON_DIGIT_CHARACTERS), int(rng.integers(1, 6))))
            masks = [render_glyph(font, character, max(12, size // 2)) for character in text]
            x_position = left
            for mask in masks:
                layer = Image.new("RGB", mask.size, colour)
                picture.paste(layer, (x_position, top), mask)
                x_position += mask.width + max(2, size // 12)
    return picture.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.5)))


def scene_crop_pictures(fonts: list[Path], count: int, seed: int) -> list[Image.Image]:
    """`count` random windows, 24-240 pixels square, of generated scenes (a new scene every 10 windows)."""
    rng = np.random.default_rng(seed)
    pictures: list[Image.Image] = []
    while len(pictures) < count:
        whole = scene(fonts, rng)
        for _ in range(min(10, count - len(pictures))):
            side = int(rng.integers(24, 241))
            left, top = (int(value) for value in rng.integers(0, SCENE_SIDE - side + 1, 2))
            pictures.append(whole.crop((left, top, left + side, top + side)))
    return pictures


def varied_non_digit_sets(fonts: list[Path], digit_images: np.ndarray, digit_labels: np.ndarray, seed: int,
                          scale: int = 1) -> dict[str, list[Image.Image]]:
    """The three kinds, 300 pictures each (times `scale`), distorted digits made from the digits given."""
    return {"distorted digits": distorted_digit_pictures(digit_images, digit_labels, 300 * scale, seed),
            "textures": texture_pictures(300 * scale, seed),
            "scene crops": scene_crop_pictures(fonts, 300 * scale, seed)}
