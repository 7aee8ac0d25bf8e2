"""Pictures digits can draw offline: digits in the machine's fonts and as pen strokes, and things that are not
digits (letters and symbols, scribbles, shapes, noise).

`digits evaluate --calibrate` fits the not-a-digit detector on them and on `digits.data.varied_non_digits`
(`digits.inference.not_a_digit_fit`), and the
benchmarks measure with them (`benchmarks/font_digits.py`, `benchmarks/not_a_digit.py`). Every generator takes a seed,
so the same call draws the same pictures. Fonts are found with `fc-list` or under /usr/share/fonts; on Debian,
`apt-get install fonts-dejavu-core fonts-liberation` gives 34 or more of them (38 on the development machine).
"""

from __future__ import annotations

import glob
import math
import random
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

DIGITS = "0123456789"
CLEAN_CANVAS = 128
CLEAN_GLYPH_HEIGHT = 80
# Letters and symbols that do not look like a digit in common fonts (O/0, l/1, Z/2, S/5, G/6, B/8, g/9 left out).
NON_DIGIT_CHARACTERS = "ACDEFHJKLMNPRTUVWXYacdefhkmnprtuvwxy#@%&?$+=*"


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


# --- digits in fonts ---------------------------------------------------------------------------


def render_glyph(font_path: Path, digit: str, height: int, boldness: int = 0) -> Image.Image:
    """The digit as an 'L' mask (255 = ink), cropped to its ink, about `height` pixels tall."""
    font = ImageFont.truetype(str(font_path), max(8, round(height * 1.4)))
    left, top, right, bottom = font.getbbox(digit, stroke_width=boldness)
    mask = Image.new("L", (int(right - left) + 4, int(bottom - top) + 4), 0)
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


# --- digits as pen strokes -----------------------------------------------------------------------


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
    """The digit drawn by `pen_picture` from its skeleton; True when the ink is dark on light paper."""
    return pen_picture(SKELETONS[digit], rng)


def pen_picture(strokes: list[list[tuple[float, float]]], rng: random.Random) -> tuple[Image.Image, bool]:
    """Pen strokes given in a unit box (x right, y down) drawn as a person writes a digit: a square picture of
    64-1024 pixels, the box 45-80 % of it tall and slanted, turned a little, wobbled, one pen width of 1-13 % of
    its height, dark on light or light on dark; True when the ink is dark on light paper."""
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
    for stroke in strokes:
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


# --- sets of pictures ----------------------------------------------------------------------------


def font_digit_pictures(fonts: list[Path], seed: int) -> list[Image.Image]:
    """Each font × digit clean and varied, and 200 pen-stroke digits."""
    rng = random.Random(seed)
    pictures = [clean_picture(font, digit) for font in fonts for digit in DIGITS]
    pictures += [varied_picture(font, digit, rng)[0] for font in fonts for digit in DIGITS]
    pictures += [stroke_picture(DIGITS[index % 10], rng)[0] for index in range(200)]
    return pictures


def glyph_picture(font: Path, character: str, rng: random.Random) -> Image.Image:
    """One character, black on white, 40–120 pixels tall, centred in a square with a 10–40 pixel margin."""
    mask = render_glyph(font, character, rng.randint(40, 120))
    side = max(mask.width, mask.height) + rng.randint(20, 80)
    position = ((side - mask.width) // 2, (side - mask.height) // 2)
    return compose(mask, (side, side), position, (0, 0, 0), (255, 255, 255))


def glyphs_in_font(font: Path, characters: str, seed: int) -> list[tuple[str, Image.Image]]:
    """Each of `characters` that the font has, with its picture as `glyph_picture` draws it: a font made from
    someone's handwriting often lacks the symbols, and would draw its empty box in their place."""
    from fontTools.ttLib import TTFont  # matplotlib's own dependency; only this function reads a character map

    rng = random.Random(seed)
    has = TTFont(str(font), fontNumber=0).getBestCmap()
    return [(character, glyph_picture(font, character, rng)) for character in characters if ord(character) in has]


def letter_pictures(fonts: list[Path], seed: int) -> list[Image.Image]:
    """Each font × NON_DIGIT_CHARACTERS, as `glyph_picture` draws them."""
    rng = random.Random(seed)
    return [glyph_picture(font, character, rng) for font in fonts for character in NON_DIGIT_CHARACTERS]


def scribble_pictures(count: int, seed: int) -> list[Image.Image]:
    """Random pen paths: 3–9 points joined by straight or curved strokes, like a child's doodle."""
    rng = np.random.default_rng(seed)
    pictures = []
    for _ in range(count):
        picture = Image.new("L", (200, 200), 255)
        points = [tuple(point) for point in rng.uniform(20, 180, (rng.integers(3, 10), 2))]
        ImageDraw.Draw(picture).line(points, fill=0, width=int(rng.integers(4, 16)), joint="curve")
        pictures.append(picture)
    return pictures


def shape_pictures(count: int, seed: int) -> list[Image.Image]:
    """Filled and outlined boxes, triangles, stars, and smiley faces."""
    rng = np.random.default_rng(seed)
    pictures = []
    for index in range(count):
        picture = Image.new("L", (200, 200), 255)
        draw = ImageDraw.Draw(picture)
        width = int(rng.integers(4, 14))
        kind = index % 4
        if kind == 0:
            corners = sorted(rng.uniform(20, 180, 2)), sorted(rng.uniform(20, 180, 2))
            box = (corners[0][0], corners[1][0], corners[0][1] + 10, corners[1][1] + 10)
            draw.rectangle(box, fill=0 if rng.random() < 0.5 else None, outline=0, width=width)
        elif kind == 1:
            draw.polygon([tuple(point) for point in rng.uniform(20, 180, (3, 2))], outline=0, width=width,
                         fill=0 if rng.random() < 0.5 else None)
        elif kind == 2:
            tips = int(rng.integers(5, 8))
            radii = [80 if step % 2 == 0 else 35 for step in range(2 * tips)]
            turn = rng.uniform(0, math.pi)
            draw.polygon([(100 + radius * math.cos(turn + step * math.pi / tips),
                           100 + radius * math.sin(turn + step * math.pi / tips)) for step, radius in enumerate(radii)],
                         outline=0, width=width)
        else:
            draw.ellipse((20, 20, 180, 180), outline=0, width=width)
            for eye_x in (70, 130):
                draw.ellipse((eye_x - 8, 65, eye_x + 8, 85), fill=0)
            draw.arc((55, 70, 145, 150), 20, 160, fill=0, width=width)
        pictures.append(picture)
    return pictures


def noise_pictures(count: int, seed: int) -> list[Image.Image]:
    """Blotchy noise: random dark blobs, smoothed, as a smudged or empty-ish photo gives."""
    rng = np.random.default_rng(seed)
    pictures = []
    for _ in range(count):
        field = rng.random((25, 25))
        blobs = np.asarray(Image.fromarray((field * 255).astype(np.uint8)).resize((200, 200), Image.Resampling.BICUBIC))
        pictures.append(Image.fromarray(np.where(blobs > rng.uniform(170, 230), 0, 255).astype(np.uint8)))
    return pictures


def non_digit_sets(fonts: list[Path], seed: int, scale: int = 1) -> dict[str, list[Image.Image]]:
    """The four kinds of non-digit; `scale` multiplies the number of scribbles, shapes and noise pictures."""
    return {"letters and symbols": letter_pictures(fonts, seed), "scribbles": scribble_pictures(300 * scale, seed),
            "shapes": shape_pictures(200 * scale, seed), "noise": noise_pictures(200 * scale, seed)}


