"""What MNIST (or any IDX data set loaded as `Mnist`) holds: class counts, pixel statistics, and the report
`digits data` prints."""

from __future__ import annotations

import numpy as np

from digits.data.mnist import CLASSES, PARTS, Mnist


def class_counts(labels: np.ndarray) -> np.ndarray:
    """How many examples each class 0..9 has."""
    return np.bincount(labels, minlength=CLASSES)


def pixel_statistics(images: np.ndarray) -> dict[str, float]:
    """min, max, mean and std of all pixels, from exact integer sums (no float copy of the images)."""
    pixels = np.ascontiguousarray(images).reshape(-1)
    total = pixels.sum(dtype=np.uint64)
    squares = np.einsum("i,i->", pixels, pixels, dtype=np.uint64, casting="unsafe")
    mean = int(total) / pixels.size
    std = max(int(squares) / pixels.size - mean**2, 0.0) ** 0.5
    return {"min": int(pixels.min()), "max": int(pixels.max()), "mean": mean, "std": std}


def describe(mnist: Mnist, first: int = 12) -> str:
    """The `digits data` report: source, checksums, shapes, class counts, pixel statistics, first labels."""
    status = ("verified: sha256 matches the official MNIST files" if mnist.verified else
              "UNVERIFIED: not the official MNIST files (another data set in MNIST's layout?); structure checked")
    lines = [f"Source     {mnist.source}", f"Checksums  {status}", "", "Arrays"]
    for part in PARTS:
        array = getattr(mnist, part)
        lines.append(f"  {part:<14}{str(array.shape):<17}{array.dtype}")

    splits = {"training": (mnist.train_images, mnist.train_labels), "test": (mnist.test_images, mnist.test_labels)}
    counts = {split: class_counts(labels) for split, (_, labels) in splits.items()}
    width = max(5, len(str(len(mnist.train_labels))) + 1)
    lines += ["", "Class counts", "  " + "class".ljust(10) + "".join(f"{digit:>{width}}" for digit in range(CLASSES))
              + f"{'total':>{width + 2}}"]
    for split, row in counts.items():
        lines.append("  " + split.ljust(10) + "".join(f"{count:>{width}}" for count in row)
                     + f"{row.sum():>{width + 2}}")

    lines += ["", "Pixel statistics (0 = black, 255 = white ink)",
              f"  {'':<10}{'min':>5}{'max':>6}{'mean':>9}{'std':>9}"]
    for split, (images, _) in splits.items():
        stats = pixel_statistics(images)
        lines.append(f"  {split:<10}{stats['min']:>5}{stats['max']:>6}{stats['mean']:>9.3f}{stats['std']:>9.3f}")

    shown = " ".join(str(label) for label in mnist.train_labels[:first])
    lines += ["", f"First {min(first, len(mnist.train_labels))} training labels: {shown}"]
    return "\n".join(lines)
