"""Train the model that ships inside the package (src/digits/pretrained/) and record what it is.

    .venv/bin/python scripts/train_pretrained.py

A small CNN (about 94,000 parameters, a 430 kB file) trained on the 60,000 MNIST training images with
light augmentation: random shifts, rotations and zoom. People's digits are less perfectly centred,
upright and sized than MNIST's, so the model should have seen such variations (no run without them was
made to measure how much they help). The MNIST test set is used once, at the end, to measure the accuracy
written into model.json. Takes about 6 minutes on 2 shared CPU cores. `--epochs 1 --train-limit 2000 --out DIR` gives a quick try.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from digits.data import load_mnist, to_model_input  # noqa: E402

REPOSITORY = Path(__file__).resolve().parents[1]
PRETRAINED_DIR = REPOSITORY / "src" / "digits" / "pretrained"

EPOCHS = 6  # About a minute each on 2 shared cores; the whole run stays near 6 minutes.
BATCH_SIZE = 128
PEAK_LEARNING_RATE = 3e-3  # Adam, decayed to zero along a cosine over all steps.
SEED = 0
# Augmentation, as fractions Keras's layers take: ±2 pixels of shift (of 28), ±10° of rotation
# (of a full turn), ±10 % of zoom. More than this blurs the classes (a rotated 6 against a 9).
SHIFT_FRACTION = 0.08
ROTATION_FRACTION = 10 / 360
ZOOM_FRACTION = 0.1

ARCHITECTURE = (
    "Conv 32 3×3 → BN → ReLU → MaxPool 2 → Conv 64 3×3 → BN → ReLU → MaxPool 2 → "
    "Conv 128 3×3 → BN → ReLU → GlobalAveragePool → Dropout 0.2 → Dense 10 softmax"
)


def build_classifier() -> keras.Model:
    """The shipped architecture: input float32 (28, 28, 1) in [0, 1], output 10 probabilities."""
    return keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(32, 3, padding="same", use_bias=False),  # -> (28, 28, 32)
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.MaxPooling2D(2),  # -> (14, 14, 32)
            layers.Conv2D(64, 3, padding="same", use_bias=False),  # -> (14, 14, 64)
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.MaxPooling2D(2),  # -> (7, 7, 64)
            layers.Conv2D(128, 3, use_bias=False),  # -> (5, 5, 128)
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.GlobalAveragePooling2D(),  # -> (128,)
            layers.Dropout(0.2),
            layers.Dense(10, activation="softmax"),
        ],
        name="pretrained_cnn",
    )


def build_augmentation() -> keras.Sequential:
    """Random variations applied to each training batch only (never saved with the classifier)."""
    return keras.Sequential(
        [
            layers.RandomTranslation(SHIFT_FRACTION, SHIFT_FRACTION, fill_mode="constant"),
            layers.RandomRotation(ROTATION_FRACTION, fill_mode="constant"),
            layers.RandomZoom(ZOOM_FRACTION, ZOOM_FRACTION, fill_mode="constant"),
        ],
        name="augmentation",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--train-limit", type=int, default=None, help="train on the first N images only")
    parser.add_argument("--out", type=Path, default=PRETRAINED_DIR, help="folder for model.keras and model.json")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(SEED)
    data = load_mnist()
    train_images = to_model_input(data.train_images[: args.train_limit])
    train_labels = data.train_labels[: args.train_limit].astype("int32")
    test_images, test_labels = to_model_input(data.test_images), data.test_labels.astype("int32")

    classifier = build_classifier()
    # The training model puts augmentation in front; only `classifier` is saved.
    trainer = keras.Sequential([keras.Input(shape=(28, 28, 1)), build_augmentation(), classifier])
    steps = args.epochs * int(np.ceil(len(train_images) / BATCH_SIZE))
    schedule = keras.optimizers.schedules.CosineDecay(PEAK_LEARNING_RATE, decay_steps=steps)
    trainer.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    started = time.perf_counter()
    trainer.fit(train_images, train_labels, batch_size=BATCH_SIZE, epochs=args.epochs, verbose=2)
    training_seconds = time.perf_counter() - started

    probabilities = classifier.predict(test_images, batch_size=1000, verbose=0)
    test_accuracy = float(np.mean(probabilities.argmax(axis=1) == test_labels))
    args.out.mkdir(parents=True, exist_ok=True)
    classifier.save(args.out / "model.keras")
    command = " ".join([".venv/bin/python scripts/train_pretrained.py", *(sys.argv[1:] if argv is None else argv)])
    info = {
        "name": "pretrained-cnn",
        "architecture": ARCHITECTURE,
        "parameters": classifier.count_params(),
        "test_accuracy": round(test_accuracy, 4),
        "test_set": f"MNIST test set, {len(test_labels)} images ({data.source.replace(f'{REPOSITORY}/', '')})",
        "training": {
            "images": len(train_images),
            "epochs": args.epochs,
            "batch_size": BATCH_SIZE,
            "optimizer": f"Adam, learning rate {PEAK_LEARNING_RATE} with cosine decay to 0",
            "loss": "sparse categorical cross-entropy",
            "augmentation": f"random shift ±{SHIFT_FRACTION:g} of the side, rotation ±10°, zoom ±{ZOOM_FRACTION:g}",
            "seed": SEED,
            "seconds": round(training_seconds, 1),
            "cpu_count": os.cpu_count(),
        },
        "versions": {
            "python": platform.python_version(),
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
        },
        "command": command,
    }
    (args.out / "model.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    print(f"test accuracy {test_accuracy:.4f}; wrote {args.out / 'model.keras'} and model.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
