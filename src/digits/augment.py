"""Data augmentation: small random rotations, shifts and zooms of the training images, and test-time shifts.

Training-time augmentation is a stack of Keras preprocessing layers placed at the front of the model. They run
inside the compiled training graph, on the batch the step is about to use, so augmentation costs a few
percent of a step instead of a Python loop that would starve two CPU cores; and they are inactive at
inference, so `model.predict` and every saved model see the images unchanged. `augment_images` applies the
same layers to an array (arrays in, arrays out) for tests and for looking at what training sees.

Test-time augmentation (`shifted_copies`) is pure NumPy: whole-pixel shifts of the test images, whose
predictions an ensemble averages with those of the originals.
"""

from __future__ import annotations

import numpy as np

# MNIST digits are centred by mass in a 28×28 frame with a 4-pixel margin, so a few degrees, pixels and
# percent of zoom keep every digit inside the frame and recognisably the same digit.
IMAGE_SIZE = 28


def augmentation_layers(*, rotation_degrees: float = 0.0, shift_pixels: int = 0, zoom: float = 0.0) -> list:
    """Keras layers that rotate by up to ±rotation_degrees, shift by up to ±shift_pixels and zoom by up to ±zoom
    (a fraction) each training image; they pass images through unchanged at inference. Empty when all are 0.

    Every layer fills the uncovered border with black (0), the background of MNIST, and computes in float32
    whatever the model's dtype policy: they act on the input images before any bfloat16 layer.
    """
    from keras import layers

    stack = []
    if rotation_degrees:
        # RandomRotation takes a fraction of a full turn.
        stack.append(layers.RandomRotation(rotation_degrees / 360, fill_mode="constant", dtype="float32",
                                           name="random_rotation"))
    if zoom:
        stack.append(layers.RandomZoom(zoom, zoom, fill_mode="constant", dtype="float32", name="random_zoom"))
    if shift_pixels:
        fraction = shift_pixels / IMAGE_SIZE
        stack.append(layers.RandomTranslation(fraction, fraction, fill_mode="constant", dtype="float32",
                                              name="random_shift"))
    return stack


def augment_images(images: np.ndarray, *, rotation_degrees: float = 0.0, shift_pixels: int = 0, zoom: float = 0.0,
                   seed: int = 0, training: bool = True) -> np.ndarray:
    """`images` (N, 28, 28, 1) float32 in [0, 1] as training would see them (training=False: as inference does).

    The labels are untouched by construction: each image stays at its index, so the i-th label still names it.
    """
    import keras

    keras.utils.set_random_seed(seed)
    batch = np.asarray(images, dtype="float32")
    for layer in augmentation_layers(rotation_degrees=rotation_degrees, shift_pixels=shift_pixels, zoom=zoom):
        batch = layer(batch, training=training)
    return np.clip(keras.ops.convert_to_numpy(batch), 0.0, 1.0)


# The test-time shifts: the original and one pixel in each of the four directions, (rows, columns).
TTA_SHIFTS: tuple[tuple[int, int], ...] = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))


def shift_images(images: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """`images` (N, 28, 28[, 1]) moved down by `rows` and right by `columns` whole pixels (negative: up, left);
    the pixels that enter are black (0) and those that leave are lost."""
    shifted = np.zeros_like(images)
    height, width = images.shape[1], images.shape[2]
    target_rows = slice(max(rows, 0), height + min(rows, 0))
    source_rows = slice(max(-rows, 0), height - max(rows, 0))
    target_columns = slice(max(columns, 0), width + min(columns, 0))
    source_columns = slice(max(-columns, 0), width - max(columns, 0))
    shifted[:, target_rows, target_columns] = images[:, source_rows, source_columns]
    return shifted


def shifted_copies(images: np.ndarray, shifts=TTA_SHIFTS) -> list[np.ndarray]:
    """One copy of `images` per (rows, columns) shift, for test-time augmentation."""
    return [shift_images(images, rows, columns) for rows, columns in shifts]
