"""The shipped model on letters and digits in fonts made from people's handwriting: measure only.

The not-a-digit detector trains on letters drawn in the machine's fonts (DejaVu and Liberation on Debian), which
are typefaces. Fonts made from a person's handwriting are closer to what a user writes, and no generator of ours
drew their glyphs. Debian packages several; they are not installed by digits, and `digits.data.synthetic.find_fonts`
must not pick them up (they would change every part the detector is fitted and measured on), so they are unpacked
into a folder of their own and given here:

    mkdir -p /tmp/handwriting && cd /tmp/handwriting
    apt-get download fonts-bwht fonts-comic-neue fonts-breip fonts-femkeklaver fonts-dkg-handwriting fonts-humor-sans
    for package in *.deb; do dpkg -x "$package" fonts; done
    cd - && .venv/bin/python benchmarks/handwriting_fonts.py /tmp/handwriting/fonts

For each font: the share of the letters kind's characters (`NON_DIGIT_CHARACTERS`, the ones that do not look like
a digit) called "not a digit", and of its ten digits the share rejected and the share read right, each drawn once
as the letters kind draws (40-120 pixels tall, black on white, seed 1). The goals of issue 23 they compare with:
at least 95 % of non-digits caught, at most 2 % of outside digits rejected.

`--train-with-half` then measures what training against them would give (research, not shipped; about 4 minutes more):
the parts are drawn with the machine's fonts and these together, which alternate between the training and the
evaluation parts as every font does, so half of the handwriting fonts train and half are held out. It prints the
shipped detector and one fitted on that training part on the held-out handwriting fonts, and the latter with each
generated kind left out of its training in turn, as `benchmarks/not_a_digit.py --held-out-kinds` does.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from digits.data.synthetic import DIGITS, NON_DIGIT_CHARACTERS, glyphs_in_font
from digits.errors import DigitsError
from digits.inference.classifier import load_classifier
from digits.pictures.prepare import prepare_image


def read(classifier, pictures: list[tuple[str, Image.Image]]):
    """The characters whose pictures hold ink, and the model's predictions for them."""
    characters, views = [], []
    for character, picture in pictures:
        try:
            views.append(prepare_image(picture))
        except DigitsError:
            continue  # No ink: refused before any model, as `digits predict` refuses it.
        characters.append(character)
    return characters, classifier.classify(np.stack(views))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fonts", type=Path, help="a folder holding the handwriting fonts (.ttf, .otf), searched below")
    parser.add_argument("--model", help="a run folder, .keras or .onnx file (default: the shipped model)")
    parser.add_argument("--train-with-half", action="store_true",
                        help="also fit a detector with half of these fonts in its training part (see above)")
    args = parser.parse_args()
    fonts = sorted(path for path in args.fonts.rglob("*") if path.suffix.lower() in (".ttf", ".otf"))
    if not fonts:
        sys.exit(f"handwriting_fonts: no .ttf or .otf font under {args.fonts}; see this script's docstring.")
    classifier = load_classifier(args.model)
    letters = caught = caught_by_probability = digits = rejected = right = 0
    missed: Counter[str] = Counter()
    print(f"model {classifier.name}; {len(fonts)} fonts under {args.fonts}")
    for font in fonts:
        characters, answers = read(classifier, glyphs_in_font(font, NON_DIGIT_CHARACTERS, 1))
        is_caught = np.asarray(answers.verdicts) != "digit"
        missed.update(character for character, hit in zip(characters, is_caught, strict=True) if not hit)
        # What the model's maximum probability alone would say, the verdict of a model without a detector.
        caught_by_probability += int(np.sum(classifier.verdicts(answers.probabilities) != "digit"))
        digit_characters, digit_answers = read(classifier, glyphs_in_font(font, DIGITS, 1))
        is_rejected = np.asarray(digit_answers.verdicts) != "digit"
        is_right = np.asarray(digit_answers.digits) == np.array([int(digit) for digit in digit_characters])
        print(f"  {font.name:34} letters caught {is_caught.mean():6.1%} of {len(characters):2}   digits rejected "
              f"{is_rejected.mean():6.1%}, read right {is_right.mean():6.1%} of {len(digit_characters)}")
        letters, caught = letters + len(characters), caught + int(is_caught.sum())
        digits, rejected, right = digits + len(digit_characters), rejected + int(is_rejected.sum()), right + int(
            is_right.sum())
    print(f"all fonts: letters caught {caught / letters:.1%} of {letters} (goal ≥ 95 %); digits rejected "
          f"{rejected / digits:.1%} (goal ≤ 2 %), read right {right / digits:.1%} of {digits}")
    print(f"the maximum probability alone: letters caught {caught_by_probability / letters:.1%}")
    print("letters missed most: " + ", ".join(f"{character} {count}" for character, count in missed.most_common(12)))
    if args.train_with_half:
        train_with_half(classifier, args.model, fonts)
    return 0


def train_with_half(classifier, model: str | None, handwriting: list[Path]) -> None:
    """The detector fitted with half of the handwriting fonts in its training part, as the module's docstring says."""
    from digits.data.mnist import load_mnist
    from digits.data.synthetic import find_fonts
    from digits.inference.not_a_digit_fit import (
        NON_DIGIT_KINDS,
        draw_parts,
        fit_layer_distance_detector,
        pooled_feature_model,
        prepared,
        read_views,
    )
    from digits.inference.not_a_digit_methods import trained_on
    from not_a_digit import seen_holdout

    keras = load_classifier(model, prefer_onnx=False)  # the parts are read through the Keras model
    fonts = sorted(find_fonts() + handwriting)
    held_out = [font for font in fonts[1::2] if font in handwriting]  # the evaluation part's fonts
    print(f"\n{len(fonts)} fonts: {len(handwriting) - len(held_out)} handwriting fonts train, {len(held_out)} "
          "are held out; drawing and reading the parts...", flush=True)
    parts = trained_on(draw_parts(keras.model, load_mnist(), temperature=keras.temperature,
                                  seen_holdout=seen_holdout(model), fonts=fonts), NON_DIGIT_KINDS)
    pictures = {name: [picture for font in held_out for _, picture in glyphs_in_font(font, characters, 1)]
                for name, characters in (("letters", NON_DIGIT_CHARACTERS), ("digits", DIGITS))}
    extractor = pooled_feature_model(keras.model)
    reads = {name: read_views(keras.model, prepared(found), temperature=keras.temperature, extractor=extractor)
             for name, found in pictures.items()}
    shipped = {name: np.mean(classifier.classify(prepared(found)).verdicts != "digit")
               for name, found in pictures.items()}
    detector = fit_layer_distance_detector(parts)
    threshold = parts.measure(detector.score)["threshold"]
    trained = {name: np.mean(detector.score(read) < threshold) for name, read in reads.items()}
    print(f"on the {len(held_out)} held-out handwriting fonts   shipped detector   trained with the other half")
    for name, what in (("letters", "letters caught"), ("digits", "digits rejected")):
        print(f"  {what} ({len(reads[name].features)})".ljust(30) + f"{shipped[name]:8.1%}   {trained[name]:10.1%}")
    print("each generated kind left out of its training in turn (caught; MNIST test digits and font digits rejected):")
    for kind in NON_DIGIT_KINDS:
        figures = parts.measure(fit_layer_distance_detector(parts, without=kind).score)
        print(f"  {kind:22} {figures['caught'][kind]:6.1%}   ({figures['mnist_rejected']:.2%}, "
              f"{figures['font_rejected']:.2%})", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
