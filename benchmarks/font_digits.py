"""How well does `digits predict` read digits that are not from MNIST?

    .venv/bin/python benchmarks/font_digits.py [--out out/font-digits] [--model RUN|FILE.keras] [--seed 0]

Generates an evaluation set of digit pictures that MNIST never saw, then reads it with exactly the code
path of `digits predict` (`load_image` → `prepare_image` → the classifier) and prints the accuracy overall,
per subset, per polarity and per file format. The pictures are written to the output folder (PNG and
JPEG) with labels.csv, so any one of them can be checked with `digits predict FILE --show DIR`. For
comparison it also reads every picture the way many demos do: squashed to 28×28 grey and inverted. Last,
it prints the accuracy on MNIST's own test digits after a round trip through the same preparation.

Subsets:
  clean    every TrueType font on the machine × every digit: black on white, centred, PNG
  varied   each font × digit twice: canvas 48–800 px, off-centre, 25–85 % of the height, any colours with
           enough contrast, dark on light or light on dark, extra boldness, some transparent PNGs, PNG or JPEG
  photo    each font × digit: blur, sensor noise, uneven lighting (a shadow gradient), low-quality JPEG
  strokes  digits drawn as pen strokes from a handwriting-like skeleton: random slant, rotation,
           proportions, wobble, pen width from hairline to marker, both polarities

Fonts are found with `fc-list` or under /usr/share/fonts; on Debian, `apt-get install fonts-dejavu-core
fonts-liberation` gives 34 of them.
"""

from __future__ import annotations

import argparse
import csv
import glob
import math
import random
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

DIGITS = "0123456789"
CLEAN_CANVAS = 128
CLEAN_GLYPH_HEIGHT = 80


def find_fonts() -> list[Path]:
    """Every TrueType/OpenType font whose ten digits render as ten different, non-empty glyphs."""
    try:
        listed = subprocess.run(["fc-list", "--format", "%{file}\n"], capture_output=True, text=True, check=True)
        candidates = listed.stdout.split()
    except (OSError, subprocess.CalledProcessError):
        candidates = []
    candidates += glob.glob("/usr/share/fonts/**/*.[ot]tf", recursive=True)
    fonts = []
    for path in sorted({Path(candidate) for candidate in candidates if candidate.endswith((".ttf", ".otf"))}):
        try:
            font = ImageFont.truetype(str(path), 40)
        except OSError:
            continue
        glyphs = set()
        for digit in DIGITS:
            sample = Image.new("L", (60, 60))
            ImageDraw.Draw(sample).text((5, 5), digit, fill=255, font=font)
            if sample.getbbox():
                glyphs.add(sample.tobytes())
        if len(glyphs) == 10:  # A symbol font draws blanks or the same box for every digit.
            fonts.append(path)
    return fonts


# --- font pictures -----------------------------------------------------------------------------------


def render_glyph(font_path: Path, digit: str, height: int, boldness: int = 0) -> Image.Image:
    """The digit as an 'L' mask (255 = ink), cropped to its ink, about `height` pixels tall."""
    font = ImageFont.truetype(str(font_path), max(8, round(height * 1.4)))
    left, top, right, bottom = font.getbbox(digit, stroke_width=boldness)
    mask = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    ImageDraw.Draw(mask).text((2 - left, 2 - top), digit, fill=255, font=font, stroke_width=boldness, stroke_fill=255)
    mask = mask.crop(mask.getbbox())
    scale = height / mask.height
    return mask.resize((max(1, round(mask.width * scale)), height), Image.Resampling.LANCZOS)


def compose(mask: Image.Image, canvas: tuple[int, int], position: tuple[int, int], ink, paper) -> Image.Image:
    """Ink of colour `ink` through `mask` at `position` on a canvas of colour `paper` (RGB or RGBA)."""
    mode = "RGBA" if len(paper) == 4 else "RGB"
    picture = Image.new(mode, canvas, tuple(paper))
    layer = Image.new(mode, mask.size, tuple(ink))
    picture.paste(layer, position, mask)
    return picture


def random_colours(rng: random.Random, dark_on_light: bool) -> tuple[tuple, tuple]:
    """Ink and paper colours whose luminances differ by at least 0.35 (of 1), the darker one as asked."""
    def luminance(colour):
        return (0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]) / 255

    while True:
        first = tuple(rng.randrange(256) for _ in range(3))
        second = tuple(rng.randrange(256) for _ in range(3))
        if abs(luminance(first) - luminance(second)) >= 0.35:
            dark, light = sorted([first, second], key=luminance)
            return (dark, light) if dark_on_light else (light, dark)


def clean_picture(font: Path, digit: str) -> Image.Image:
    mask = render_glyph(font, digit, CLEAN_GLYPH_HEIGHT)
    position = ((CLEAN_CANVAS - mask.width) // 2, (CLEAN_CANVAS - mask.height) // 2)
    return compose(mask, (CLEAN_CANVAS, CLEAN_CANVAS), position, (0, 0, 0), (255, 255, 255))


def varied_picture(font: Path, digit: str, rng: random.Random) -> tuple[Image.Image, bool]:
    width, height = rng.randint(48, 800), rng.randint(48, 800)
    glyph_height = max(12, round(min(width, height) * rng.uniform(0.25, 0.85)))
    boldness = rng.choice([0, 0, 0, max(1, glyph_height // 40)])
    mask = render_glyph(font, digit, glyph_height, boldness)
    if mask.width > width:
        mask = mask.resize((width, max(1, round(mask.height * width / mask.width))), Image.Resampling.LANCZOS)
    position = (rng.randint(0, width - mask.width), rng.randint(0, height - mask.height))
    dark_on_light = rng.random() < 0.5
    ink, paper = random_colours(rng, dark_on_light)
    if rng.random() < 0.15:
        # A transparent PNG: coloured ink on nothing, as a drawing program exports it.
        return compose(mask, (width, height), position, ink + (255,), paper + (0,)), dark_on_light
    return compose(mask, (width, height), position, ink, paper), dark_on_light


def photo_picture(font: Path, digit: str, rng: random.Random) -> tuple[Image.Image, bool]:
    side = rng.randint(200, 1200)
    glyph_height = round(side * rng.uniform(0.3, 0.7))
    mask = render_glyph(font, digit, glyph_height)
    slack_x, slack_y = max(0, side - mask.width), side - mask.height
    position = (rng.randint(slack_x // 4, slack_x - slack_x // 4), rng.randint(slack_y // 4, slack_y - slack_y // 4))
    dark_on_light = rng.random() < 0.7
    ink, paper = (0.15, 0.85) if dark_on_light else (0.85, 0.15)
    canvas = np.full((side, side), paper, np.float32)
    placed = np.zeros((side, side), np.float32)
    placed[position[1] : position[1] + mask.height, position[0] : position[0] + mask.width] = np.asarray(mask) / 255
    picture = canvas * (1 - placed) + ink * placed
    picture = ndimage.gaussian_filter(picture, glyph_height * rng.uniform(0.0, 0.03))
    # A shadow: brightness falls linearly by up to half across the page, in a random direction.
    angle = rng.uniform(0, 2 * math.pi)
    rows, columns = np.mgrid[0:side, 0:side] / side
    ramp = (np.cos(angle) * columns + np.sin(angle) * rows) - 0.5 * (np.cos(angle) + np.sin(angle))
    picture = picture * (1 - rng.uniform(0.2, 0.5) * (ramp + 0.5))
    picture += np.random.default_rng(rng.randrange(2**32)).normal(0, rng.uniform(0.01, 0.05), picture.shape)
    grey = Image.fromarray(np.clip(picture * 255, 0, 255).astype(np.uint8))
    return grey.convert("RGB"), dark_on_light


# --- pen strokes -------------------------------------------------------------------------------------


def arc(centre_x, centre_y, radius_x, radius_y, start_degrees, end_degrees, steps=40):
    """Points along an elliptical arc; angles in degrees, counter-clockwise on screen, 90 = top."""
    angles = np.radians(np.linspace(start_degrees, end_degrees, steps))
    return [(centre_x + radius_x * math.cos(a), centre_y - radius_y * math.sin(a)) for a in angles]


# Each digit as pen strokes in a unit box (x right, y down), the way people commonly write them.
SKELETONS = {
    "0": [arc(0.5, 0.5, 0.3, 0.45, 90, 450)],
    "1": [[(0.36, 0.22), (0.55, 0.05), (0.55, 0.95)]],
    "2": [arc(0.5, 0.3, 0.28, 0.25, 160, -30) + [(0.2, 0.95), (0.82, 0.95)]],
    "3": [arc(0.5, 0.27, 0.25, 0.22, 150, -90) + arc(0.5, 0.72, 0.28, 0.23, 90, -150)],
    "4": [[(0.62, 0.95), (0.62, 0.05), (0.12, 0.68), (0.85, 0.68)]],
    "5": [[(0.78, 0.05), (0.3, 0.05), (0.27, 0.46)] + arc(0.5, 0.68, 0.28, 0.27, 140, -150)],
    "6": [arc(0.62, 0.55, 0.4, 0.5, 100, 190) + arc(0.5, 0.7, 0.27, 0.25, 180, 540)],
    "7": [[(0.18, 0.05), (0.82, 0.05), (0.42, 0.95)]],
    "8": [arc(0.5, 0.27, 0.22, 0.22, -90, 270) + arc(0.5, 0.72, 0.27, 0.23, 90, 450)],
    "9": [arc(0.48, 0.3, 0.26, 0.25, 0, 360) + [(0.74, 0.3), (0.7, 0.95)]],
}


def stroke_picture(digit: str, rng: random.Random) -> tuple[Image.Image, bool]:
    side = rng.choice([64, 128, 256, 512, 1024])
    height = side * rng.uniform(0.45, 0.8)
    width = height * rng.uniform(0.55, 0.8)
    slant = rng.uniform(-0.3, 0.1)  # Handwriting leans right (negative: x grows as y falls).
    turn = math.radians(rng.uniform(-8, 8))
    centre_x, centre_y = side * rng.uniform(0.35, 0.65), side * rng.uniform(0.35, 0.65)
    wobble = np.random.default_rng(rng.randrange(2**32))
    pen = max(1, round(height * rng.choice([0.01, 0.04, 0.08, 0.13])))
    dark_on_light = rng.random() < 0.5
    picture = Image.new("L", (side, side), 255 if dark_on_light else 0)
    draw = ImageDraw.Draw(picture)
    for stroke in SKELETONS[digit]:
        points = np.array(stroke) - 0.5
        points += wobble.normal(0, 0.012, points.shape)
        points[:, 0] = points[:, 0] * width + slant * (points[:, 1]) * -height
        points[:, 1] *= height
        rotated = [
            (centre_x + x * math.cos(turn) - y * math.sin(turn), centre_y + x * math.sin(turn) + y * math.cos(turn))
            for x, y in points
        ]
        draw.line(rotated, fill=0 if dark_on_light else 255, width=pen, joint="curve")
    return picture, dark_on_light


# --- the benchmark -----------------------------------------------------------------------------------


def generate(out: Path, seed: int) -> list[dict]:
    """Write every picture into `out` and return one row per picture: path, digit, subset, polarity, format."""
    rng = random.Random(seed)
    fonts = find_fonts()
    if not fonts:
        sys.exit("No TrueType fonts found; install some, e.g. `apt-get install fonts-dejavu-core fonts-liberation`.")
    rows = []

    def save(picture: Image.Image, subset: str, digit: str, index: int, dark_on_light: bool, form: str):
        folder = out / subset
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{digit}-{index:04d}.{form}"
        if form == "jpg":
            picture.convert("RGB").save(path, quality=rng.randint(50, 95))
        else:
            picture.save(path)
        polarity = "dark on light" if dark_on_light else "light on dark"
        rows.append({"path": str(path), "digit": int(digit), "subset": subset, "polarity": polarity, "format": form})

    for index, (font, digit) in enumerate((font, digit) for font in fonts for digit in DIGITS):
        save(clean_picture(font, digit), "clean", digit, index, True, "png")
    for index, (font, digit) in enumerate((font, digit) for font in fonts for digit in DIGITS for _ in range(2)):
        picture, dark_on_light = varied_picture(font, digit, rng)
        form = "png" if picture.mode == "RGBA" else rng.choice(["png", "jpg"])  # JPEG has no transparency.
        save(picture, "varied", digit, index, dark_on_light, form)
    for index, (font, digit) in enumerate((font, digit) for font in fonts for digit in DIGITS):
        picture, dark_on_light = photo_picture(font, digit, rng)
        save(picture, "photo", digit, index, dark_on_light, "jpg")
    for index in range(400):
        digit = DIGITS[index % 10]
        picture, dark_on_light = stroke_picture(digit, rng)
        save(picture, "strokes", digit, index, dark_on_light, rng.choice(["png", "jpg"]))
    with open(out / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} pictures from {len(fonts)} fonts and {len(SKELETONS)} stroke skeletons in {out}")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description="Accuracy of `digits predict` on digits that are not from MNIST.")
    parser.add_argument("--out", type=Path, default=Path("out/font-digits"), help="where the pictures go")
    parser.add_argument("--model", help="a run folder or .keras file (default: the shipped model)")
    parser.add_argument("--seed", type=int, default=0, help="seeds every random choice of the set")
    args = parser.parse_args()

    from digits.predict import load_classifier, predict_files

    rows = generate(args.out, args.seed)
    classifier = load_classifier(args.model)
    started = time.perf_counter()
    results = predict_files(classifier, [Path(row["path"]) for row in rows])
    seconds = time.perf_counter() - started
    naive_digits = classifier.predict(np.stack([naive_view(row["path"]) for row in rows])).argmax(axis=1)

    groups: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    mistakes = []
    for row, result, naive_digit in zip(rows, results, naive_digits, strict=True):
        correct = result.error is None and result.digit == row["digit"]
        for group in ("all", f"subset: {row['subset']}", f"polarity: {row['polarity']}", f"format: {row['format']}"):
            groups[group].append((correct, naive_digit == row["digit"]))
        if not correct:
            answer = result.error or f"read as {result.digit} ({result.probabilities.max():.0%})"
            mistakes.append(f"{row['path']} (a {row['digit']}): {answer}")
    (args.out / "mistakes.txt").write_text("\n".join(mistakes) + "\n")

    print(f"model: {classifier.name} ({classifier.info.get('architecture')}); "
          f"{len(rows)} pictures read in {seconds:.1f} s ({1000 * seconds / len(rows):.0f} ms each)")
    print("| set | pictures | `digits predict` | naive: shrink to 28×28 and invert |")
    print("|---|---:|---:|---:|")
    for group in sorted(groups, key=lambda name: (name != "all", name)):
        correct, naive = np.array(groups[group]).T
        print(f"| {group} | {len(correct)} | {100 * correct.mean():.1f} % | {100 * naive.mean():.1f} % |")
    print(f"mistakes listed in {args.out / 'mistakes.txt'}")
    print(mnist_round_trip(classifier))
    return 0


def mnist_round_trip(classifier) -> str:
    """MNIST's own test digits, printed dark on white and prepared again: the preparation should not hurt."""
    from digits.data import load_mnist
    from digits.images import prepare_image

    data = load_mnist()
    prepared = np.stack([prepare_image(Image.fromarray(255 - image)) for image in data.test_images])
    as_given = np.mean(classifier.predict(data.test_images).argmax(axis=1) == data.test_labels)
    round_trip = np.mean(classifier.predict(prepared).argmax(axis=1) == data.test_labels)
    return (
        f"MNIST test set ({len(prepared)} images) inverted to dark on white and prepared like a user's picture: "
        f"{100 * round_trip:.2f} % (as given: {100 * as_given:.2f} %)"
    )


def naive_view(path: str) -> np.ndarray:
    """What many demos feed the model: the picture squashed to 28×28 grey, inverted (assumes dark ink)."""
    with Image.open(path) as picture:
        grey = picture.convert("RGBA").convert("L").resize((28, 28), Image.Resampling.LANCZOS)
    return 255 - np.asarray(grey, dtype=np.uint8)


if __name__ == "__main__":
    sys.exit(main())
