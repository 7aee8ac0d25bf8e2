"""How well does `digits predict` read digits that are not from MNIST?

    .venv/bin/python benchmarks/font_digits.py [--out out/font-digits] [--model RUN|FILE.keras] [--seed 0]

Generates an evaluation set of digit pictures that MNIST never saw, then reads it with exactly the code
path of `digits predict` (`load_image` → `prepare_image` → the classifier) and prints the accuracy overall,
per subset, per polarity and per file format. The pictures are written to the output folder (PNG and
JPEG) with labels.csv, so any one of them can be checked with `digits predict FILE --show DIR`. For
comparison it also reads every picture the way many demos do: squashed to 28×28 grey and inverted. Last,
it prints the accuracy on MNIST's own test digits after a round trip through the same preparation. The last
column is the share of these real digits that the not-a-digit verdict turns away (docs/inference.md).

Subsets:
  clean    every TrueType font on the machine × every digit: black on white, centred, PNG
  varied   each font × digit twice: canvas 48–800 px, off-centre, 25–85 % of the height, any colours with
           enough contrast, dark on light or light on dark, extra boldness, some transparent PNGs, PNG or JPEG
  photo    each font × digit: blur, sensor noise, uneven lighting (a shadow gradient), low-quality JPEG
  strokes  digits drawn as pen strokes from a handwriting-like skeleton: random slant, rotation,
           proportions, wobble, pen width from hairline to marker, both polarities

The generators are `digits.data.synthetic`'s. Fonts are found with `fc-list` or under /usr/share/fonts; on Debian,
`apt-get install fonts-dejavu-core fonts-liberation` gives 34 or more of them (38 on the development machine).
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

# The generators live in the package: `digits evaluate --calibrate` draws with them too.
from digits.data.synthetic import (
    DIGITS,
    SKELETONS,
    clean_picture,
    find_fonts,
    render_glyph,
    stroke_picture,
    varied_picture,
)


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

    from digits.inference.classifier import load_classifier
    from digits.inference.files import predict_files
    from digits.inference.prediction import NOT_A_DIGIT

    rows = generate(args.out, args.seed)
    classifier = load_classifier(args.model)
    started = time.perf_counter()
    results = predict_files(classifier, [Path(row["path"]) for row in rows])
    seconds = time.perf_counter() - started
    naive_digits = classifier.classify(np.stack([naive_view(row["path"]) for row in rows])).digits

    groups: dict[str, list[tuple[bool, bool, bool]]] = defaultdict(list)
    mistakes = []
    for row, result, naive_digit in zip(rows, results, naive_digits, strict=True):
        prediction = result.prediction
        # The whole picture's reading (digits predict reads numbers): one digit, the right one.
        correct = prediction is not None and prediction.number == str(row["digit"])
        # A real digit the not-a-digit verdict turned away.
        rejected = prediction is not None and prediction.verdict == NOT_A_DIGIT
        for group in ("all", f"subset: {row['subset']}", f"polarity: {row['polarity']}", f"format: {row['format']}"):
            groups[group].append((correct, naive_digit == row["digit"], rejected))
        if not correct:
            answer = (result.error if prediction is None
                      else f"read as {prediction.number} ({prediction.probability:.0%})")
            mistakes.append(f"{row['path']} (a {row['digit']}): {answer}")
    (args.out / "mistakes.txt").write_text("\n".join(mistakes) + "\n")

    print(f"model: {classifier.name} ({classifier.info.get('architecture')}); "
          f"{len(rows)} pictures read in {seconds:.1f} s ({1000 * seconds / len(rows):.0f} ms each)")
    print("| set | pictures | `digits predict` | naive: shrink to 28×28 and invert | called \"not a digit\" |")
    print("|---|---:|---:|---:|---:|")
    for group in sorted(groups, key=lambda name: (name != "all", name)):
        correct, naive, rejected = np.array(groups[group]).T
        print(f"| {group} | {len(correct)} | {100 * correct.mean():.1f} % | {100 * naive.mean():.1f} % "
              f"| {100 * rejected.mean():.1f} % |")
    print(f"mistakes listed in {args.out / 'mistakes.txt'}")
    print(mnist_round_trip(classifier))
    return 0


def mnist_round_trip(classifier) -> str:
    """MNIST's own test digits, printed dark on white and prepared again: the preparation should not hurt."""
    from digits.data.mnist import load_mnist
    from digits.pictures.prepare import prepare_image

    data = load_mnist()
    prepared = np.stack([prepare_image(Image.fromarray(255 - image)) for image in data.test_images])
    as_given = np.mean(classifier.classify(data.test_images).digits == data.test_labels)
    round_trip = np.mean(classifier.classify(prepared).digits == data.test_labels)
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
