"""Networks trained to tell digits from non-digits, measured by leaving one kind out (issue 23, third round).

    .venv/bin/python benchmarks/not_a_digit_trained.py [--kinds letters,scribbles,...] [--binary-epochs 4]

For each kind of generated non-digit (and once with none left out), on the parts `draw_parts` draws for the shipped
model, with the comparison's share of the training part (4,000 MNIST digits, 1,000 font digits, 1,000 of each kind):
  outlier exposure  the shipped classifier fine-tuned one epoch with Outlier Exposure's loss (Hendrycks et al.
                    2019), scored by its largest probability; also its accuracy on the MNIST holdout (training
                    images 50,000-59,999) and test digits beside the shipped classifier's
  binary CNN        a small CNN trained from scratch, digits against non-digits, scored by its logit
(`digits.inference.not_a_digit_trained`). Each line prints the held-out kind's share caught at the threshold chosen
on the choice part, as `benchmarks/not_a_digit.py --compare` does; its reference there: layer distances, 61.6 %
worst held-out kind (letters), maximum probability 15.5 % (noise) and 37.3 % on letters. The method that combines
the binary CNN with layer distances is in `--compare` ("layer distances + binary CNN").
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from digits.data.mnist import load_mnist
from digits.data.synthetic import find_fonts
from digits.inference.classifier import load_classifier
from digits.inference.not_a_digit_fit import (
    COMPARISON_MNIST,
    COMPARISON_PER_KIND,
    DIGIT_KINDS,
    NON_DIGIT_KINDS,
    draw_parts,
    evenly_spread,
)
from digits.inference.not_a_digit_trained import BINARY_EPOCHS, fit_binary_cnn, fit_outlier_exposure


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", default="none," + ",".join(NON_DIGIT_KINDS),
                        help="comma-separated kinds to leave out (none: leave none out)")
    parser.add_argument("--binary-epochs", type=int, default=BINARY_EPOCHS)
    args = parser.parse_args()
    classifier = load_classifier(None, prefer_onnx=False)
    data = load_mnist()
    # The shipped model trained on the holdout: its thresholds take the deeper MNIST quantile.
    parts = draw_parts(classifier.model, data, temperature=classifier.temperature, seen_holdout=True,
                       fonts=find_fonts())
    training = parts.training
    digit_images = np.r_[evenly_spread(training["mnist"].images, COMPARISON_MNIST),
                         evenly_spread(training["font"].images, COMPARISON_PER_KIND)]
    # Font digits carry no label; the classifier's reading of them is right for 99.9 % (benchmarks/font_digits.py).
    digit_labels = np.r_[evenly_spread(parts.training_labels, COMPARISON_MNIST),
                         evenly_spread(training["font"].logits, COMPARISON_PER_KIND).argmax(axis=1)]
    for kind in args.kinds.split(","):
        without = None if kind == "none" else kind
        others = np.concatenate([evenly_spread(training[other].images, COMPARISON_PER_KIND) for other in training
                                 if other not in DIGIT_KINDS and other != without])
        start = time.perf_counter()
        tuned = fit_outlier_exposure(classifier.model, digit_images, digit_labels, others)
        tuned_seconds = time.perf_counter() - start
        start = time.perf_counter()
        binary = fit_binary_cnn(digit_images, others, epochs=args.binary_epochs)
        binary_seconds = time.perf_counter() - start
        probabilities = {id(read): tuned(read.images) for part in (parts.choice, parts.evaluation)
                         for read in part.values()}
        accuracy = {name: float(np.mean(probabilities[id(part["mnist"])].argmax(axis=1) == labels))
                    for name, part, labels in (("holdout", parts.choice, data.train_labels[-10_000:]),
                                               ("test", parts.evaluation, data.test_labels))}
        shipped = {name: float(np.mean(part["mnist"].probabilities.argmax(axis=1) == labels))
                   for name, part, labels in (("holdout", parts.choice, data.train_labels[-10_000:]),
                                              ("test", parts.evaluation, data.test_labels))}
        for name, score, seconds in (("outlier exposure", lambda read, found=probabilities: found[id(read)].max(axis=1),
                                      tuned_seconds),
                                     ("binary CNN", lambda read, network=binary: network(read.images),
                                      binary_seconds)):
            figures = parts.measure(score)
            held = f"held out {without}: {figures['caught'][without]:.1%}" if without else "none held out"
            print(f"{name:17} {held:34} fit {seconds:4.0f} s; caught "
                  + " ".join(f"{other[:9]} {caught:.1%}" for other, caught in figures["caught"].items())
                  + f"; MNIST rejected {figures['mnist_rejected']:.2%}, fonts {figures['font_rejected']:.2%}",
                  flush=True)
        print(f"{'':17} outlier exposure's accuracy: holdout {accuracy['holdout']:.2%} (shipped "
              f"{shipped['holdout']:.2%}), test {accuracy['test']:.2%} (shipped {shipped['test']:.2%})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
