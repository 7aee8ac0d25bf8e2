"""Pictures of whole numbers, composed from pictures of single digits: for the tests and `benchmarks/read_numbers.py`.

A number is its digits' ink side by side on one line, each glyph centred on the line's middle: apart (a gap
between them), or touching (each overlapping the one before by a share of its width). `photo_like` then turns
the ink into something a phone might take: rotated a few degrees, seen slightly askew, blurred, unevenly lit,
noisy and saved as a low-quality JPEG. Every function takes its randomness from the generator it is given.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageFilter

# MNIST digits are 28 pixels; a picture of a number is drawn this many times larger (as a photo or a scan would be).
MNIST_SCALE = 3
# Where numbers' digits come from: MNIST's test set for the figures quoted, and the training set's last 10,000 (the
# holdout, never the test set) to choose the segmentation's settings on.
MNIST_SOURCES = {"test": ("test", 0, 10_000), "holdout": ("train", 50_000, 60_000)}


def mnist_digits(mnist, source: str) -> tuple[np.ndarray, np.ndarray]:
    """The (N, 28, 28) uint8 images and (N,) labels numbers are composed from: a name of MNIST_SOURCES."""
    if source not in MNIST_SOURCES:
        raise ValueError(f"source must be one of {', '.join(MNIST_SOURCES)}, not {source!r}")
    split, start, stop = MNIST_SOURCES[source]
    images, labels = getattr(mnist, f"{split}_images"), getattr(mnist, f"{split}_labels")
    return images[start:stop], labels[start:stop]


def mnist_glyph(image: np.ndarray) -> np.ndarray:
    """An MNIST digit (28, 28) uint8 → its ink in [0, 1], cropped to its columns and rows, MNIST_SCALE times larger."""
    rows, columns = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
    crop = image[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]
    enlarged = Image.fromarray(crop).resize((crop.shape[1] * MNIST_SCALE, crop.shape[0] * MNIST_SCALE),
                                            Image.Resampling.BICUBIC)
    return np.clip(np.asarray(enlarged, np.float32) / 255.0, 0.0, 1.0)


def mask_glyph(mask: Image.Image) -> np.ndarray:
    """A glyph mask ('L', 255 = ink, e.g. `digits.data.synthetic.render_glyph`) → its ink in [0, 1]."""
    return np.asarray(mask, np.float32) / 255.0


Box = tuple[int, int, int, int]  # x, y, width, height


def compose_number(glyphs: list[np.ndarray], spacings: list[int], margin: int) -> tuple[np.ndarray, list[Box]]:
    """Glyphs (ink in [0, 1]) side by side, `spacings[i]` pixels between glyph i and i + 1 (negative: they overlap),
    on a black canvas with `margin` pixels all round: the (H, W) float32 ink and each glyph's box (x, y, w, h)."""
    if len(spacings) != len(glyphs) - 1:
        raise ValueError(f"spacings needs {len(glyphs) - 1} values, one between each two glyphs, not {len(spacings)}")
    height = max(glyph.shape[0] for glyph in glyphs)
    lefts = [margin]
    for glyph, spacing in zip(glyphs[:-1], spacings, strict=True):
        lefts.append(lefts[-1] + glyph.shape[1] + spacing)
    width = max(left + glyph.shape[1] for left, glyph in zip(lefts, glyphs, strict=True)) + margin
    canvas = np.zeros((height + 2 * margin, width), np.float32)
    boxes = []
    for left, glyph in zip(lefts, glyphs, strict=True):
        top = margin + (height - glyph.shape[0]) // 2
        region = canvas[top : top + glyph.shape[0], left : left + glyph.shape[1]]
        np.maximum(region, glyph, out=region)
        boxes.append((left, top, glyph.shape[1], glyph.shape[0]))
    return canvas, boxes


def ink_picture(ink: np.ndarray, dark_on_light: bool = True) -> Image.Image:
    """Ink in [0, 1] as a grey picture: black ink on white paper, or (dark_on_light=False) white on black."""
    grey = 1.0 - ink if dark_on_light else ink
    return Image.fromarray(np.round(np.clip(grey, 0.0, 1.0) * 255).astype(np.uint8))


def photo_like(ink: np.ndarray, rng: np.random.Generator, *, max_degrees: float = 8.0) -> Image.Image:
    """Ink in [0, 1] as a photo of dark ink on paper: rotated up to ±max_degrees, a mild perspective, blurred,
    lit unevenly (one side up to 35 % darker), with sensor noise, saved and read back as a JPEG of quality 40–80."""
    height, width = ink.shape
    picture = Image.fromarray(np.round(ink * 255).astype(np.uint8))
    picture = picture.rotate(float(rng.uniform(-max_degrees, max_degrees)), Image.Resampling.BICUBIC, expand=True)
    width, height = picture.size
    # Perspective: each corner moves up to 4 % of the side, as a picture taken not quite square-on.
    reach = 0.04
    corners = [(0.0, 0.0), (float(width), 0.0), (float(width), float(height)), (0.0, float(height))]
    moved = [(x + rng.uniform(-reach, reach) * width, y + rng.uniform(-reach, reach) * height) for x, y in corners]
    picture = picture.transform(picture.size, Image.Transform.PERSPECTIVE, _perspective(corners, moved),
                                Image.Resampling.BICUBIC)
    picture = picture.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.5))))
    ink = np.asarray(picture, np.float32) / 255.0
    paper, pen = float(rng.uniform(0.75, 0.95)), float(rng.uniform(0.05, 0.25))
    grey = paper - (paper - pen) * ink
    angle = rng.uniform(0, 2 * math.pi)
    rows, columns = np.mgrid[0:height, 0:width]
    along = ((columns / max(width, 1)) * math.cos(angle) + (rows / max(height, 1)) * math.sin(angle))
    along = (along - along.min()) / max(float(np.ptp(along)), 1e-6)
    grey = grey * (1.0 - float(rng.uniform(0.1, 0.35)) * along)  # A shadow across the page.
    grey = grey + rng.normal(0.0, 0.02, grey.shape)
    photo = Image.fromarray(np.round(np.clip(grey, 0.0, 1.0) * 255).astype(np.uint8))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=int(rng.integers(40, 81)))
    buffer.seek(0)
    return Image.open(buffer).convert("L")


def _perspective(source: list[tuple[float, float]], target: list[tuple[float, float]]) -> list[float]:
    """The eight coefficients Pillow's PERSPECTIVE transform takes to map `target` corners back onto `source`."""
    rows, values = [], []
    for (x, y), (u, v) in zip(source, target, strict=True):
        rows.append([u, v, 1, 0, 0, 0, -x * u, -x * v])
        rows.append([0, 0, 0, u, v, 1, -y * u, -y * v])
        values.extend([x, y])
    return np.linalg.solve(np.array(rows, np.float64), np.array(values, np.float64)).tolist()
