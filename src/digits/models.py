"""The study's architectures as Keras models, and the registry that names them.

Every model takes `data.to_model_input` images — float32 (N, 28, 28, 1) in [0, 1] — and returns the
10 class probabilities (softmax). Only Keras layers are used, so the models run on any Keras backend.

`build_model(name, precision=...)` builds under a Keras dtype policy: "mixed_bfloat16" computes in bfloat16
with float32 weights, and the output layer (the softmax, hence the loss) always stays float32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import keras
from keras import layers

from digits.augment import augmentation_layers
from digits.errors import DigitsError
from digits.recipes import AUGMENTED_MODELS, PRECISIONS

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


def cnn(augmentation: Sequence[layers.Layer] = ()) -> keras.Model:
    """The study's convolutional network (the keras-io MNIST convnet), 34,826 parameters.

    `augmentation` (digits.augment.augmentation_layers) goes first: a parameter-free layer that moves each training
    image and passes images through unchanged at inference, so the count stays 34,826 but the model then has one
    more layer than the study's.
    """
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


# The convolutions of cnn-bn's three blocks, at 28×28, 14×14 and 7×7: wider where the images are small and
# channels are cheap. A block may hold several; all but its last are followed by relu alone. Two convolutions in
# blocks 2 and 3, ((32,), (64, 64), (128, 128)), cost 3× as much per image and scored no better on the holdout
# in the same time (99.58 % after 20 epochs against 99.60 % after 36).
CNN_BN_BLOCKS = ((32,), (64,), (128,))
# Batch normalisation's moving averages forget at 0.9 per step, not Keras's 0.99: they then settle within about
# 50 steps, so a short run (a smoke test, the first epochs) is scored with statistics that match its weights.
CNN_BN_NORM_MOMENTUM = 0.9
# Dropout before the classifier: the one regulariser besides augmentation and label smoothing.
CNN_BN_DROPOUT = 0.4


def cnn_bn(augmentation: Sequence[layers.Layer] = ()) -> keras.Model:
    """A stronger small CNN: three blocks of 3×3 convolutions (CNN_BN_BLOCKS: 32, 64 and 128 channels), each
    ending in 2×2 max pooling, batch normalisation and relu, then dropout and a dense softmax; 104,874
    parameters."""
    blocks = []
    for number, convolutions in enumerate(CNN_BN_BLOCKS, start=1):
        for inner, channels in enumerate(convolutions[:-1], start=1):
            blocks.append(layers.Conv2D(channels, kernel_size=(3, 3), padding="same", activation="relu",
                                        name=f"conv{number}_{inner}"))
        blocks += [
            # No bias: batch normalisation's offset replaces it.
            layers.Conv2D(convolutions[-1], kernel_size=(3, 3), padding="same", use_bias=False, name=f"conv{number}"),
            layers.MaxPooling2D(pool_size=(2, 2), name=f"pool{number}"),  # 28 -> 14 -> 7 -> 3
            # Normalising after pooling, on a quarter of the values, is what makes the model fast: on this CPU,
            # batch normalisation of the full-size maps took half of each training step. A max commutes with
            # normalisation's increasing scale, so relu(norm(pool(x))) sees what pool(relu(norm(x))) would,
            # with statistics over the pooled values.
            layers.BatchNormalization(momentum=CNN_BN_NORM_MOMENTUM, name=f"norm{number}"),
            layers.Activation("relu", name=f"relu{number}"),
        ]
    return keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE),
            *augmentation,
            *blocks,  # (28, 28, 1) -> (3, 3, 128)
            layers.Flatten(name="flatten"),  # -> (1152,)
            layers.Dropout(CNN_BN_DROPOUT, name="dropout"),
            layers.Dense(NUM_CLASSES, activation="softmax", name="output", dtype="float32"),
        ],
        name="cnn_bn",
    )


MODELS: dict[str, Callable[[], keras.Model]] = {
    "shallow": shallow,
    "cnn": cnn,
    "cnn-bn": cnn_bn,
}

# One line per model for `digits models`.
DESCRIPTIONS: dict[str, str] = {
    "shallow": "784 → Dense 64 sigmoid → Dense 10 softmax",
    "cnn": "Conv 32 3×3 relu → MaxPool 2 → Conv 64 3×3 relu → MaxPool 2 → Flatten → Dropout 0.5 "
    "→ Dense 10 softmax",
    "cnn-bn": "3 × (Conv 3×3 → MaxPool 2 → BatchNorm → relu), 32-64-128 channels → Flatten → Dropout 0.4 "
    "→ Dense 10 softmax",
}


def build_model(name: str, *, precision: str = "float32", shift: int = 0, rotation: float = 0.0,
                zoom: float = 0.0, elastic: float = 0.0) -> keras.Model:
    """A fresh, untrained model by registry name; its weights depend on Keras's random seed.

    precision is "float32" or "mixed_bfloat16" (resolve "auto" with `resolve_precision` first); shift (pixels),
    rotation (degrees), zoom (a fraction) and elastic (pixels) are the training-time augmentation (the CNNs only).
    """
    if name not in MODELS:
        raise DigitsError(f"Unknown model {name!r}; choose one of: {', '.join(MODELS)}.")
    if precision not in PRECISIONS[:2]:
        raise DigitsError(f"Unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}.")
    if (shift or rotation or zoom or elastic) and name not in AUGMENTED_MODELS:
        raise DigitsError(f"Augmentation is built into the {' and '.join(AUGMENTED_MODELS)} models only, not "
                          f"{name!r}; drop the augmentation settings.")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        if name not in AUGMENTED_MODELS:
            return MODELS[name]()
        return MODELS[name](augmentation_layers(rotation_degrees=rotation, shift_pixels=shift, zoom=zoom,
                                                elastic_pixels=elastic))
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
