"""The study's architectures as Keras models, and the registry that names them.

Every model takes `data.to_model_input` images — float32 (N, 28, 28, 1) in [0, 1] — and returns the
10 class probabilities (softmax). Only Keras layers are used, so the models run on any Keras backend.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers

from digits.errors import DigitsError

INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


def shallow() -> keras.Model:
    """The study's shallow network: 784 → 64 sigmoid → 10 softmax, 50,890 parameters."""
    return keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE),
            layers.Flatten(name="flatten"),  # (28, 28, 1) -> (784,)
            layers.Dense(64, activation="sigmoid", name="hidden"),
            layers.Dense(NUM_CLASSES, activation="softmax", name="output"),
        ],
        name="shallow",
    )


def cnn() -> keras.Model:
    """The study's convolutional network (the keras-io MNIST convnet), 34,826 parameters."""
    return keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE),
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu", name="conv1"),  # -> (26, 26, 32)
            layers.MaxPooling2D(pool_size=(2, 2), name="pool1"),  # -> (13, 13, 32)
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu", name="conv2"),  # -> (11, 11, 64)
            layers.MaxPooling2D(pool_size=(2, 2), name="pool2"),  # -> (5, 5, 64)
            layers.Flatten(name="flatten"),  # -> (1600,)
            layers.Dropout(0.5, name="dropout"),
            layers.Dense(NUM_CLASSES, activation="softmax", name="output"),
        ],
        name="cnn",
    )


MODELS: dict[str, Callable[[], keras.Model]] = {
    "shallow": shallow,
    "cnn": cnn,
}

# One line per model for `digits models`.
DESCRIPTIONS: dict[str, str] = {
    "shallow": "784 → Dense 64 sigmoid → Dense 10 softmax",
    "cnn": "Conv 32 3×3 relu → MaxPool 2 → Conv 64 3×3 relu → MaxPool 2 → Flatten → Dropout 0.5 "
    "→ Dense 10 softmax",
}


def build_model(name: str) -> keras.Model:
    """A fresh, untrained model by registry name; its weights depend on Keras's random seed."""
    if name not in MODELS:
        raise DigitsError(f"Unknown model {name!r}; choose one of: {', '.join(MODELS)}.")
    return MODELS[name]()
