"""The study's architectures as Keras models, and the registry that names them.

Every model takes `data.to_model_input` images — float32 (N, 28, 28, 1) in [0, 1] — and returns the
10 class probabilities (softmax). Only Keras layers are used, so the models run on any Keras backend.

`build_model(name, precision=...)` builds under a Keras dtype policy: "mixed_bfloat16" computes in bfloat16
with float32 weights, and the output layer (the softmax, hence the loss) always stays float32.

Keras is imported inside the builders, so the names and checks here (which digits.training.recipes uses to reject a bad
recipe at once) cost no TensorFlow start-up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from digits.data.mnist import CLASSES, IMAGE_SIDE
from digits.errors import DigitsError

if TYPE_CHECKING:
    import keras
    from keras import layers

INPUT_SHAPE = (IMAGE_SIDE, IMAGE_SIDE, 1)

# "mixed_bfloat16" computes in bfloat16 (float32 weights, float32 softmax and loss); "auto" picks it where it was
# measured to be faster on this CPU model (digits.training.precision), else float32.
PRECISIONS = ("float32", "mixed_bfloat16", "auto")

# The models with training-time augmentation layers (digits.training.augment) in front.
AUGMENTED_MODELS = ("cnn", "cnn-bn")


def shallow() -> keras.Model:
    """The study's shallow network: 784 → 64 sigmoid → 10 softmax, 50,890 parameters."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE),
            layers.Flatten(name="flatten"),  # (28, 28, 1) -> (784,)
            layers.Dense(64, activation="sigmoid", name="hidden"),
            # float32 even under a mixed policy: the softmax and the loss need its range and precision.
            layers.Dense(CLASSES, activation="softmax", name="output", dtype="float32"),
        ],
        name="shallow",
    )


def cnn(augmentation: Sequence[layers.Layer] = ()) -> keras.Model:
    """The study's convolutional network (the keras-io MNIST convnet), 34,826 parameters.

    `augmentation` (digits.training.augment.augmentation_layers) goes first: a parameter-free layer that moves each
    training image and passes images through unchanged at inference, so the count stays 34,826 but the model then has
    one more layer than the study's.
    """
    import keras
    from keras import layers

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
            layers.Dense(CLASSES, activation="softmax", name="output", dtype="float32"),
        ],
        name="cnn",
    )


# The convolutions of cnn-bn's three blocks, at 28×28, 14×14 and 7×7: wider where the images are small and
# channels are cheap. A block may hold several; all but its last are followed by relu alone. Two convolutions in
# blocks 2 and 3, ((32,), (64, 64), (128, 128)), cost 3× as much per image and scored no better on the holdout
# in the same time (99.58 % after 20 epochs against 99.60 % after 36).
CNN_BN_BLOCKS: tuple[tuple[int, ...], ...] = ((32,), (64,), (128,))
# Batch normalisation's moving averages forget at 0.9 per step, not Keras's 0.99: they then settle within about
# 50 steps, so a short run (a smoke test, the first epochs) is scored with statistics that match its weights.
CNN_BN_NORM_MOMENTUM = 0.9
# Dropout before the classifier: the one regulariser besides augmentation and label smoothing.
CNN_BN_DROPOUT = 0.4


def cnn_bn(augmentation: Sequence[layers.Layer] = ()) -> keras.Model:
    """A stronger small CNN: three blocks of 3×3 convolutions (CNN_BN_BLOCKS: 32, 64 and 128 channels), each
    ending in 2×2 max pooling, batch normalisation and relu, then dropout and a dense softmax; 104,874
    parameters."""
    import keras
    from keras import layers

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
            layers.Dense(CLASSES, activation="softmax", name="output", dtype="float32"),
        ],
        name="cnn_bn",
    )


# The speedrun's network (preset speedrun), after tuomaso/train_mnist_fast's record recipe: its two convolutions
# (24 of 5×5, then 32 of 3×3) and its dense layer of 256, each convolution pooled before its relu.
SPEEDRUN_CONVOLUTIONS: tuple[tuple[int, int], ...] = ((24, 5), (32, 3))
SPEEDRUN_DENSE = 256
# MNIST's pixel mean and standard deviation (of [0, 1] images): the record recipe trains on standardised
# images, which lets Adam take its large steps from the first batch.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def cnn_speedrun() -> keras.Model:
    """The speedrun's small CNN: standardise, then per convolution (SPEEDRUN_CONVOLUTIONS) conv → 2×2 max pool →
    relu, then a dense relu layer and a dense softmax."""
    import keras
    from keras import layers

    blocks = []
    for number, (channels, kernel) in enumerate(SPEEDRUN_CONVOLUTIONS, start=1):
        blocks += [
            layers.Conv2D(channels, kernel_size=(kernel, kernel), name=f"conv{number}"),
            # Pooling first, then relu: the same result (a max commutes with relu) on a quarter of the values.
            layers.MaxPooling2D(pool_size=(2, 2), name=f"pool{number}"),  # 28 -> 24 -> 12, then 12 -> 10 -> 5
            layers.Activation("relu", name=f"relu{number}"),
        ]
    return keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE),
            layers.Rescaling(1 / MNIST_STD, offset=-MNIST_MEAN / MNIST_STD, name="standardise"),
            *blocks,  # (28, 28, 1) -> (5, 5, 32)
            layers.Flatten(name="flatten"),  # -> (800,)
            layers.Dense(SPEEDRUN_DENSE, activation="relu", name="hidden"),
            layers.Dense(CLASSES, activation="softmax", name="output", dtype="float32"),
        ],
        name="cnn_speedrun",
    )


MODELS: dict[str, Callable[..., keras.Model]] = {
    "shallow": shallow,
    "cnn": cnn,
    "cnn-bn": cnn_bn,
    "cnn-speedrun": cnn_speedrun,
}

# One line per model for `digits models`.
DESCRIPTIONS: dict[str, str] = {
    "shallow": "784 → Dense 64 sigmoid → Dense 10 softmax",
    "cnn": "Conv 32 3×3 relu → MaxPool 2 → Conv 64 3×3 relu → MaxPool 2 → Flatten → Dropout 0.5 "
    "→ Dense 10 softmax",
    "cnn-bn": "3 × (Conv 3×3 → MaxPool 2 → BatchNorm → relu), 32-64-128 channels → Flatten → Dropout 0.4 "
    "→ Dense 10 softmax (the shipped model's, trained by preset pretrained)",
    "cnn-speedrun": "standardise → Conv 24 5×5 → MaxPool 2 → relu → Conv 32 3×3 → MaxPool 2 → relu → Flatten "
    "→ Dense 256 relu → Dense 10 softmax (preset speedrun)",
}


def build_model(name: str, *, precision: str = "float32", shift: int = 0, rotation: float = 0.0,
                zoom: float = 0.0, elastic: float = 0.0) -> keras.Model:
    """A fresh, untrained model by registry name; its weights depend on Keras's random seed.

    precision is "float32" or "mixed_bfloat16" ("auto" is resolved by `digits.training.precision.choose_precision`);
    shift (pixels), rotation (degrees), zoom (a fraction) and elastic (pixels) are the training-time augmentation
    (the CNNs only).
    """
    check_model_name(name)
    check_precision(precision)
    if precision == "auto":
        # Measuring needs models, so the measurement (digits.training.precision) sits above this module.
        raise DigitsError("build_model needs float32 or mixed_bfloat16; resolve `precision=auto` with "
                          "digits.training.precision.choose_precision first (digits.build_model does).")
    check_augmentation(name, shift=shift, rotation=rotation, zoom=zoom, elastic=elastic)
    import keras

    from digits.training.augment import augmentation_layers

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


def check_model_name(name: str) -> None:
    """Raise DigitsError unless `name` is in the registry."""
    if name not in MODELS:
        raise DigitsError(f"Unknown model {name!r}; choose one of: {', '.join(MODELS)}.")


def check_precision(precision: str) -> None:
    """Raise DigitsError unless `precision` is in PRECISIONS."""
    if precision not in PRECISIONS:
        raise DigitsError(f"Unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}.")


def check_augmentation(name: str, **amounts: float) -> None:
    """Raise DigitsError if a non-zero augmentation amount (shift, rotation, zoom, elastic) is asked of a model
    that has no augmentation layer."""
    for kind, amount in amounts.items():
        if amount and name not in AUGMENTED_MODELS:
            raise DigitsError(f"Random-{kind} augmentation is built into the {' and '.join(AUGMENTED_MODELS)} models "
                              f"only, not {name}; drop `augment_{kind}`.")

