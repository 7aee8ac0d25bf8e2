"""How often does `digits predict` read a whole number exactly?

    .venv/bin/python benchmarks/read_numbers.py [--count 300] [--seed 0] [--model RUN|FILE.keras|FILE.onnx] [--out DIR]
        [--sets touching ...] [--digits test|holdout]

Composes numbers of 2–6 digits and reads each with exactly the code path of `digits predict` (`find_digits` →
the classifier → the most confident cuts), then prints the share read exactly beside the goal (issue 22):

  handwritten  MNIST *test* digits (never the training set), 6–20 px apart at 3× size          goal ≥ 95 %
  fonts        every usable system font, 40–120 px tall, 10–30 % of the height apart            goal ≥ 98 %
  photo-like   half handwritten, half fonts, with gaps, then ±8° rotation, perspective, blur,
               uneven light, noise and JPEG (`digits.data.numbers.photo_like`)                 goal ≥ 90 %
  touching     MNIST test digits each overlapping the one before by 5–15 % of its width        goal ≥ 80 %

Last, single digits: MNIST test digits and font digits drawn as pictures, read by `prepare_image` alone (as
before numbers were read) and by the number reader; the two must agree (--singles 0 skips them). --out writes
every picture read wrongly, named by what it holds and what was read, to look at with `digits predict FILE --show DIR`.

`--digits holdout` composes the handwritten numbers from MNIST *training* digits 50,000–59,999 instead: settings of
the segmentation are chosen there, never on the test digits the figures are quoted on.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np

from digits.data.mnist import load_mnist
from digits.data.numbers import (
    MNIST_SOURCES,
    compose_number,
    ink_picture,
    mask_glyph,
    mnist_digits,
    mnist_glyph,
    photo_like,
)
from digits.data.synthetic import DIGITS, find_fonts, render_glyph
from digits.inference.classifier import load_classifier
from digits.inference.numbers import read_layouts
from digits.pictures.prepare import prepare_image
from digits.pictures.segment import find_digits

GOALS = {"handwritten": 0.95, "fonts": 0.98, "photo-like": 0.90, "touching": 0.80}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300, help="numbers per set (300)")
    parser.add_argument("--singles", type=int, default=500, help="single digits of each kind (500)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="a run folder, .keras or .onnx file (default: the shipped model)")
    parser.add_argument("--sets", nargs="+", choices=list(GOALS), default=list(GOALS), metavar="SET",
                        help=f"the sets of numbers to read ({', '.join(GOALS)}: all)")
    parser.add_argument("--digits", choices=list(MNIST_SOURCES), default="test",
                        help="MNIST digits to write numbers with: test (the figures), or holdout (training digits "
                             "50,000-59,999, to choose settings on)")
    parser.add_argument("--out", type=Path, help="write the pictures read wrongly here")
    parser.add_argument("--examples", type=Path, metavar="DIR",
                        help="only write the docs' example pictures here (then `digits predict DIR --show ...`)")
    args = parser.parse_args()
    if args.examples is not None:
        write_examples(args.examples, load_mnist(), find_fonts())
        return

    classifier = load_classifier(args.model)
    images, labels = mnist_digits(load_mnist(), args.digits)
    fonts = find_fonts()
    rng = np.random.default_rng(args.seed)
    print(f"model {classifier.name} ({classifier.runtime}); {len(fonts)} fonts; {args.count} numbers a set; "
          f"MNIST {args.digits} digits\n")
    print(f"{'set':<12} {'exact':>7} {'goal':>6}  {'digits right':>12} {'ms/picture':>10}")
    for name in GOALS:
        # Every set's numbers are drawn, read or not, so a set reads the same numbers whichever others are chosen.
        numbers = [make_number(name, (images, labels), fonts, rng) for _ in range(args.count)]
        if name not in args.sets:
            continue
        pictures, truths = [], []
        for picture, truth in numbers:
            pictures.append(picture)
            truths.append(truth)
        started = time.perf_counter()
        read = read_pictures(classifier, pictures)
        milliseconds = 1000 * (time.perf_counter() - started) / len(pictures)
        exact = np.mean([number == truth for number, truth in zip(read, truths, strict=True)])
        right = np.mean([_digits_right(number, truth) for number, truth in zip(read, truths, strict=True)])
        verdict = "met" if exact >= GOALS[name] else "NOT met"
        print(f"{name:<12} {exact:>7.1%} {GOALS[name]:>6.0%}  {right:>12.1%} {milliseconds:>10.1f}   {verdict}")
        if args.out is not None:
            _write_wrong(args.out / name, pictures, truths, read)
    if args.singles:
        print()
        single_digits(classifier, (images, labels), fonts, args.singles, rng)


def make_number(kind: str, mnist: tuple[np.ndarray, np.ndarray], fonts, rng: np.random.Generator):
    """One picture of a number of the set `kind`, and the number it holds; `mnist`: (images, labels) to write with."""
    length = int(rng.integers(2, 7))
    if kind == "photo-like":
        base = "handwritten" if rng.random() < 0.5 else "fonts"
        ink, truth = _number_ink(base, length, mnist, fonts, rng)
        return photo_like(ink, rng), truth
    ink, truth = _number_ink(kind, length, mnist, fonts, rng)
    return ink_picture(ink, dark_on_light=bool(rng.random() < 0.8)), truth


def _number_ink(kind: str, length: int, mnist, fonts, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    if kind == "fonts":
        font = fonts[int(rng.integers(len(fonts)))]
        truth = "".join(DIGITS[int(digit)] for digit in rng.integers(0, 10, length))
        height = int(rng.integers(40, 121))
        glyphs = [mask_glyph(render_glyph(font, digit, height)) for digit in truth]
        spacings = [round(float(rng.uniform(0.1, 0.3)) * height) for _ in range(length - 1)]
        return compose_number(glyphs, spacings, margin=height // 2)[0], truth
    images, labels = mnist
    indices = rng.integers(0, len(labels), length)
    truth = "".join(str(int(labels[index])) for index in indices)
    glyphs = [mnist_glyph(images[index]) for index in indices]
    if kind == "touching":
        spacings = [-max(1, round(float(rng.uniform(0.05, 0.15)) * glyph.shape[1])) for glyph in glyphs[1:]]
    else:
        spacings = [int(rng.integers(6, 21)) for _ in range(length - 1)]
    return compose_number(glyphs, spacings, margin=30)[0], truth


def read_pictures(classifier, pictures) -> list[str]:
    """What `digits predict` reads in each picture ("" where it finds nothing)."""
    numbers = []
    for picture in pictures:
        try:
            layout = find_digits(picture)
        except Exception as error:  # noqa: BLE001  A picture read as nothing counts as read wrongly.
            numbers.append(f"<{type(error).__name__}>")
            continue
        numbers.append(read_layouts(classifier.classify, [layout])[0].number)
    return numbers


def single_digits(classifier, mnist, fonts, count: int, rng: np.random.Generator) -> None:
    """Single digits read by `prepare_image` alone and by the number reader: accuracy of each, and agreement."""
    print(f"{'single digits':<16} {'prepare_image':>13} {'number reader':>13} {'same view':>10}")
    python_rng = random.Random(int(rng.integers(2**31)))
    images, digit_labels = mnist
    for kind in ("mnist", "fonts"):
        pictures, labels = [], []
        for _ in range(count):
            if kind == "mnist":
                index = int(rng.integers(len(digit_labels)))
                pictures.append(ink_picture(compose_number([mnist_glyph(images[index])], [], 30)[0]))
                labels.append(str(int(digit_labels[index])))
            else:
                digit = python_rng.choice(DIGITS)
                glyph = mask_glyph(render_glyph(python_rng.choice(fonts), digit, python_rng.randint(30, 150)))
                pictures.append(ink_picture(compose_number([glyph], [], glyph.shape[0] // 2)[0]))
                labels.append(digit)
        before = classifier.classify(np.stack([prepare_image(picture) for picture in pictures])).digits
        layouts = [find_digits(picture) for picture in pictures]
        readings = read_layouts(classifier.classify, layouts)
        after = [reading.number for reading in readings]
        same = np.mean([len(reading) == 1 and np.array_equal(reading.views[0], prepare_image(picture))
                        for reading, picture in zip(readings, pictures, strict=True)])
        accuracy_before = np.mean([str(digit) == label for digit, label in zip(before.tolist(), labels, strict=True)])
        accuracy_after = np.mean([number == label for number, label in zip(after, labels, strict=True)])
        print(f"{kind:<16} {accuracy_before:>13.1%} {accuracy_after:>13.1%} {same:>10.1%}")


def write_examples(folder: Path, mnist, fonts) -> None:
    """The docs' pictures: a handwritten number, a photo-like typed one, touching digits and a slanted line."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    # MNIST test images of the digits 0-9 (indices into the test set).
    test_index = {"0": 3, "1": 2, "2": 1, "3": 18, "4": 4, "5": 8, "6": 11, "7": 0, "8": 61, "9": 7}

    def handwritten(number: str, spacing: int) -> np.ndarray:
        glyphs = [mnist_glyph(mnist.test_images[test_index[digit]]) for digit in number]
        spacings = [spacing if spacing >= 0 else round(spacing / 100 * glyph.shape[1]) for glyph in glyphs[1:]]
        return compose_number(glyphs, spacings, margin=30)[0]

    ink_picture(handwritten("2026", 12)).save(folder / "1-handwritten-2026.png")
    glyphs = [mask_glyph(render_glyph(fonts[0], digit, 90)) for digit in "4096"]
    photo_like(compose_number(glyphs, [20] * 3, margin=60)[0], np.random.default_rng(1)).save(
        folder / "2-photo-4096.jpg")
    ink_picture(handwritten("6174", -10)).save(folder / "3-touching-6174.png")
    line = ink_picture(handwritten("1789", 12))
    line.rotate(25, Image.Resampling.BICUBIC, expand=True, fillcolor=255).save(folder / "4-slanted-1789.png")


def _digits_right(number: str, truth: str) -> float:
    """The share of the true digits read right in place (a number of the wrong length scores its common prefix)."""
    return sum(read == true for read, true in zip(number, truth, strict=False)) / len(truth)


def _write_wrong(folder: Path, pictures, truths, numbers) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, (picture, truth, number) in enumerate(zip(pictures, truths, numbers, strict=True)):
        if number != truth:
            picture.save(folder / f"{index:04d}-{truth}-read-{number.strip('<>')}.png")


if __name__ == "__main__":
    main()
