"""The study's architectures as Keras models, and the registry that names them.

Every model takes `data.to_model_input` images — float32 (N, 28, 28, 1) in [0, 1] — and returns the
10 class probabilities (softmax). Only Keras layers are used, so the models run on any Keras backend.

`build_model(name, precision=...)` builds under a Keras dtype policy: "mixed_bfloat16" computes in bfloat16
with float32 weights, and the output layer (the softmax, hence the loss) always stays float32.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
from keras import layers

from digits.errors import DigitsError
from digits.recipes import PRECISIONS

INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


def shallow() -> keras.Model:
    """The study's shallow network: 784 → 64 sigmoid → 10 softmax, 50,890 parameters."""
    return keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE),
            layers.Flatten(name="flatten"),  # (28, 28, 1) -> (784,)
            layers.Dense(64, activation="sigmoid", name="hidden"),
            # float32 even under a mixed policy: the softmax and the loss need its range and precision.
            layers.Dense(NUM_CLASSES, activation="softmax", name="output", dtype="float32"),
        ],
        name="shallow",
    )


def cnn(shift: int = 0) -> keras.Model:
    """The study's convolutional network (the keras-io MNIST convnet), 34,826 parameters.

    shift > 0 puts a RandomTranslation layer first: each training image moves by up to ±shift pixels
    (black fill); at inference it passes images through unchanged. It has no parameters, so the count stays
    34,826, but the model then has one more layer than the study's.
    """
    augmentation = []
    if shift:
        fraction = shift / INPUT_SHAPE[0]
        # float32: the translation runs on the input images before any bfloat16 layer.
        augmentation = [layers.RandomTranslation(fraction, fraction, fill_mode="constant", dtype="float32",
                                                 name="random_shift")]
    return keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE),
            *augmentation,
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu", name="conv1"),  # -> (26, 26, 32)
            layers.MaxPooling2D(pool_size=(2, 2), name="pool1"),  # -> (13, 13, 32)
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu", name="conv2"),  # -> (11, 11, 64)
            layers.MaxPooling2D(pool_size=(2, 2), name="pool2"),  # -> (5, 5, 64)
            layers.Flatten(name="flatten"),  # -> (1600,)
            layers.Dropout(0.5, name="dropout"),
            layers.Dense(NUM_CLASSES, activation="softmax", name="output", dtype="float32"),
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


def build_model(name: str, *, precision: str = "float32", shift: int = 0) -> keras.Model:
    """A fresh, untrained model by registry name; its weights depend on Keras's random seed.

    precision is "float32" or "mixed_bfloat16" (resolve "auto" with `resolve_precision` first); shift is
    the random-shift augmentation in pixels (the CNN only).
    """
    if name not in MODELS:
        raise DigitsError(f"Unknown model {name!r}; choose one of: {', '.join(MODELS)}.")
    if precision not in PRECISIONS[:2]:
        raise DigitsError(f"Unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}.")
    if shift and name != "cnn":
        raise DigitsError(f"Random-shift augmentation is built into the cnn model only, not {name!r}; "
                          "drop --augment-shift.")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        return MODELS[name](shift=shift) if shift else MODELS[name]()
    finally:
        # The policy is global: later models (an evaluation, the next run) must not inherit it.
        keras.config.set_dtype_policy(previous)


def native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bfloat16 natively (AVX-512 BF16 or AMX); reads /proc/cpuinfo when not given."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # Not Linux: no cheap way to tell, so stay with float32.
            return False
    flags = set(cpuinfo.split())
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, cpuinfo: str | None = None) -> str:
    """"auto" becomes "mixed_bfloat16" on a CPU with native bfloat16, else "float32"; others stay."""
    if precision == "auto":
        return "mixed_bfloat16" if native_bf16(cpuinfo) else "float32"
    return precision
