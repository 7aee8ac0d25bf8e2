"""Can the model tell a digit from something that is not one? Two scores, their ROC AUC, and thresholds.

    .venv/bin/python benchmarks/not_a_digit.py [--model RUN|FILE.keras] [--held-out-kinds] [--write]

Two scores are measured side by side:
  maximum probability  the model's largest probability (maximum softmax)
  digit score          the not-a-digit detector (digits.inference.not_a_digit): a small network over the features the
                       classifier's last layer reads, trained here on digits and generated non-digits
A picture whose score is under the threshold is called "not a digit". The fitting, choosing and measuring are
`digits.inference.not_a_digit_fit.fit_not_a_digit`'s, which `digits evaluate --calibrate` runs for a run too; this
script prints every figure. Every set is generated offline by `digits.data.synthetic` and read through
`digits.pictures.prepare.prepare_image`, exactly as `digits predict` reads a file:
  digits      MNIST images; font digits and pen-stroke digits (the generators of benchmarks/font_digits.py)
  non-digits  letters and symbols in every font on the machine (those that look like digits, such as O, l, S,
              Z, B, g, left out), random scribbles, shapes (boxes, triangles, stars, a smiley), noise blobs
Everything comes in three parts drawn separately. The detector trains on the first (the first 20,000 MNIST
training images; fonts with an even index; generator seeds 2, 3 and 4). The threshold is chosen on the second
(the last 10,000 MNIST training images, the holdout; the same fonts; seed 0). Every figure is measured on the
third (the 10,000 MNIST test images; the fonts with an odd index, never seen; seed 1). The rule: the highest
threshold that rejects at most 0.5 % of the choice part's MNIST digits (0.2 % for a model that trained on them,
as the shipped one did: it is surer of digits it has seen) and at most 2 % of its font and stroke digits
(margins under the goals). --held-out-kinds also trains the detector four more times, each time without one
kind of non-digit, and measures how well it catches the kind it never saw: a fairer guess at new kinds of
non-digit than the main figure, whose kinds the detector trained on (in other fonts and other draws).
--write saves the detector and both thresholds beside the model (the shipped model: src/digits/pretrained/);
export the model again afterwards (docs/inference.md).

Goals (issue 17): at most 1 % of MNIST test digits and 3 % of font/stroke digits rejected, at least 90 % of
non-digits caught.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from digits.data.mnist import load_mnist
from digits.data.synthetic import find_fonts
from digits.errors import DigitsError
from digits.evaluation.calibration import holdout_unseen, record_not_a_digit
from digits.inference.classifier import PRETRAINED_DIR, load_classifier
from digits.inference.not_a_digit_fit import GOALS, NON_DIGIT_KINDS, fit_not_a_digit, goals_met


def seen_holdout(model: str | None) -> bool:
    """Whether the model trained on the MNIST holdout (the shipped one trained on all 60,000 images)."""
    config_path = PRETRAINED_DIR / "config.json" if model is None else Path(model) / "config.json"
    try:
        recipe = json.loads(config_path.read_text()).get("recipe", {})
    except (OSError, ValueError):
        return True  # unknown: assume it saw them
    return not holdout_unseen(recipe, 60_000)


def print_figures(name: str, figures: dict) -> None:
    counts = figures["counts"]
    print(f"\nscore: {name}, threshold {figures['threshold']:.4g}")
    print(f"ROC AUC (digits vs non-digits)     {figures['auc']:.4f}")
    print(f"MNIST test digits rejected         {figures['mnist_rejected']:6.2%}   goal ≤ {GOALS['mnist_rejected']:.0%}")
    print(f"font and stroke digits rejected    {figures['font_rejected']:6.2%}   goal ≤ {GOALS['font_rejected']:.0%}"
          f"   ({counts['font']} pictures)")
    print(f"non-digits caught                  {figures['caught_all']:6.2%}   goal ≥ {GOALS['caught']:.0%}")
    for kind, caught in figures["caught"].items():
        print(f"  {kind:30} {caught:6.2%} of {counts[kind]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a run folder or .keras file (default: the shipped model)")
    parser.add_argument("--held-out-kinds", action="store_true",
                        help="also measure each kind of non-digit with a detector that never trained on it")
    parser.add_argument("--write", action="store_true", help="save the detector and thresholds beside the model")
    args = parser.parse_args()
    try:
        classifier = load_classifier(args.model, prefer_onnx=False)  # The features come from the Keras model.
        fonts = find_fonts()
        fit = fit_not_a_digit(classifier.model, load_mnist(), temperature=classifier.temperature,
                              seen_holdout=seen_holdout(args.model), held_out_kinds=args.held_out_kinds, fonts=fonts)
    except DigitsError as error:
        sys.exit(f"not_a_digit: {error}")
    print(f"model {classifier.name} (keras); {len(fonts)} fonts; the detector trains on seeds 2-4 and "
          f"{len(fonts[0::2])} fonts, thresholds are chosen on seed 0 and the MNIST holdout, every figure is "
          f"measured on seed 1, the other {len(fonts[1::2])} fonts and the MNIST test set")
    for name, figures in fit.figures.items():
        print_figures(name, figures)
    if fit.held_out:
        print("\neach kind caught by a detector that never trained on it (threshold chosen again):")
        for kind in NON_DIGIT_KINDS:
            figures = fit.held_out[kind]
            print(f"  {kind:30} {figures['caught'][kind]:6.2%}   (all non-digits {figures['caught_all']:6.2%}, "
                  f"MNIST rejected {figures['mnist_rejected']:.2%}, fonts rejected {figures['font_rejected']:.2%})")
    met = goals_met(fit.figures["digit score"])
    print(f"\ngoals with the digit score: {'met' if met else 'NOT met'}")
    if args.write:
        folder = PRETRAINED_DIR if args.model is None else Path(args.model)
        if not folder.is_dir():
            sys.exit("not_a_digit: --write needs a run folder (or the shipped model).")
        record_not_a_digit(folder, fit, "python benchmarks/not_a_digit.py --write")
        print(f"wrote the detector and thresholds into {folder}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
