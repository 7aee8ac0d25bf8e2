"""Data augmentation: small random rotations, zooms, shifts and elastic distortions of the training images, and
test-time shifts.

Training-time augmentation is one Keras layer, `RandomWarp`, at the front of the model. It runs inside the
compiled training graph, on the batch the step is about to use, so augmentation costs a few percent of a step
instead of a Python loop that would starve two CPU cores; and it is inactive at inference, so `model.predict` and
every saved model see the images unchanged. It composes the rotation, zoom and shift into one affine map, adds an
optional smooth elastic displacement, and resamples each image once: Keras's RandomRotation, RandomZoom and
RandomTranslation each resample (and blur) the image again, and RandomElasticTransform costs 70 % of a step.
A shift alone is `RandomShift`: whole-pixel moves done as two small matrix products, which cost almost nothing
beside a convolution and keep the digit's pixels exactly as they were (no interpolation blur).
`augment_images` applies it to an array (arrays in, arrays out) for tests and for looking at what training sees.

Test-time augmentation (`shifted_copies`) is pure NumPy: whole-pixel shifts of the test images, whose
predictions an ensemble averages with those of the originals.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from digits.data.mnist import IMAGE_SIDE

# MNIST digits are centred by mass in a 28×28 frame with a 4-pixel margin, so a few degrees, pixels and
# percent of zoom keep every digit inside the frame and recognisably the same digit.
# The elastic displacement is random at a coarse grid of control points and bilinear in between: a 4×4 grid
# over 28 pixels bends strokes over about 9 pixels, the scale of a pen's wobble (Simard et al. 2003 smooth a
# per-pixel field with a Gaussian of sigma 4 instead, which costs a convolution per image).
ELASTIC_GRID = 4


@keras.saving.register_keras_serializable(package="digits")
class RandomWarp(keras.layers.Layer):
    """Moves each training image by a random rotation (± rotation_degrees), zoom (± zoom, a fraction) and shift
    (± shift_pixels in each direction), plus a smooth random displacement of about elastic_pixels (standard
    deviation at the control points), sampled once with bilinear interpolation; the pixels that come from
    outside the frame are black. Inactive at inference. Images are (N, 28, 28, 1) float32 in [0, 1]."""

    def __init__(self, rotation_degrees: float = 0.0, zoom: float = 0.0, shift_pixels: float = 0.0,
                 elastic_pixels: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rotation_degrees, self.zoom = float(rotation_degrees), float(zoom)
        self.shift_pixels, self.elastic_pixels = float(shift_pixels), float(elastic_pixels)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Each output pixel's position relative to the image centre, (1, 28, 28) each.
        offsets = np.arange(IMAGE_SIDE, dtype="float32") - (IMAGE_SIDE - 1) / 2
        self.row_offsets, self.column_offsets = (grid[None] for grid in np.meshgrid(offsets, offsets, indexing="ij"))

    def call(self, images, training=None):
        if not training:
            return images
        count = ops.shape(images)[0]
        draws = keras.random.uniform((count, 4), -1.0, 1.0, seed=self.seed_generator)  # (N, 4) in [-1, 1)
        angle = draws[:, 0] * (self.rotation_degrees * math.pi / 180)
        scale = 1.0 + draws[:, 1] * self.zoom
        # Where each output pixel comes from: the inverse map, rotated by -angle and scaled by 1/scale.
        cosine = (ops.cos(angle) / scale)[:, None, None]
        sine = (ops.sin(angle) / scale)[:, None, None]
        row_offsets = ops.convert_to_tensor(self.row_offsets)
        column_offsets = ops.convert_to_tensor(self.column_offsets)
        row_shift = (draws[:, 2] * self.shift_pixels)[:, None, None]
        column_shift = (draws[:, 3] * self.shift_pixels)[:, None, None]
        centre = (IMAGE_SIDE - 1) / 2
        rows = cosine * row_offsets + sine * column_offsets + centre - row_shift  # (N, 28, 28)
        columns = cosine * column_offsets - sine * row_offsets + centre - column_shift
        if self.elastic_pixels:
            control = keras.random.normal((count, ELASTIC_GRID, ELASTIC_GRID, 2), stddev=self.elastic_pixels,
                                          seed=self.seed_generator)
            field = ops.image.resize(control, (IMAGE_SIDE, IMAGE_SIDE), interpolation="bilinear")  # (N, 28, 28, 2)
            rows, columns = rows + field[..., 0], columns + field[..., 1]
        return sample_bilinear(images[..., 0], rows, columns)[..., None]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rotation_degrees": self.rotation_degrees, "zoom": self.zoom,
                "shift_pixels": self.shift_pixels, "elastic_pixels": self.elastic_pixels, "seed": self.seed}


@keras.saving.register_keras_serializable(package="digits")
class RandomShift(keras.layers.Layer):
    """Moves each training image by a random whole number of pixels, up to ± shift_pixels in each direction;
    the pixels that enter are black. Inactive at inference. Images are (N, 28, 28, 1) float32 in [0, 1].

    A shift by (rows, columns) is `down @ image @ right`, with 0/1 matrices that have one 1 per row: two 28×28
    products per image, about 2 % of the study CNN's arithmetic, against a resampling kernel for Keras's
    RandomTranslation.
    """

    def __init__(self, shift_pixels: int = 2, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.shift_pixels = int(shift_pixels)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training or not self.shift_pixels:
            return images
        count = ops.shape(images)[0]
        # (N, 2) whole-pixel shifts, uniform over -shift_pixels .. shift_pixels.
        shifts = keras.random.randint((count, 2), -self.shift_pixels, self.shift_pixels + 1, seed=self.seed_generator)
        positions = ops.arange(IMAGE_SIDE, dtype="int32")
        # down[n, i, j] = 1 where output row i reads input row j = i - shift: (N, 28, 28); rows reading outside
        # the frame are all zero, which is the black fill.
        down = ops.cast(ops.equal(positions[None, None, :], positions[None, :, None] - shifts[:, 0, None, None]),
                        images.dtype)
        right = ops.cast(ops.equal(positions[None, :, None], positions[None, None, :] - shifts[:, 1, None, None]),
                         images.dtype)
        return ops.matmul(ops.matmul(down, images[..., 0]), right)[..., None]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "shift_pixels": self.shift_pixels, "seed": self.seed}


def sample_bilinear(images, rows, columns):
    """images (N, H, W) read at fractional (rows, columns), each (N, H, W): bilinear, black outside the frame.

    Four gathers from the flattened batch: Keras's map_coordinates does eight (it interpolates the batch
    index too) and made a training step slower than three separate Keras layers.
    """
    count, height, width = ops.shape(images)[0], images.shape[1], images.shape[2]
    flat = ops.reshape(images, (-1,))
    top, left = ops.floor(rows), ops.floor(columns)
    down, right = rows - top, columns - left  # the weights of the lower and the right neighbours
    top, left = ops.cast(top, "int32"), ops.cast(left, "int32")
    first_pixel = (ops.arange(count, dtype="int32") * (height * width))[:, None, None]
    sampled = ops.zeros_like(rows)
    for row_step, row_weight in ((0, 1.0 - down), (1, down)):
        for column_step, column_weight in ((0, 1.0 - right), (1, right)):
            row, column = top + row_step, left + column_step
            inside = (row >= 0) & (row < height) & (column >= 0) & (column < width)
            index = first_pixel + ops.clip(row, 0, height - 1) * width + ops.clip(column, 0, width - 1)
            value = ops.where(inside, ops.take(flat, index), 0.0)
            sampled = sampled + value * row_weight * column_weight
    return sampled


def augmentation_layers(*, rotation_degrees: float = 0.0, shift_pixels: float = 0.0, zoom: float = 0.0,
                        elastic_pixels: float = 0.0) -> list:
    """The training-time augmentation for a model's front: one layer, or none when every amount is 0.

    A shift alone is a RandomShift (whole pixels, what `quick-cnn` uses); anything more is one RandomWarp, which
    resamples. Either computes in float32 whatever the model's dtype policy: it acts on the input images
    before any bfloat16 layer.
    """
    if not (rotation_degrees or shift_pixels or zoom or elastic_pixels):
        return []
    if not (rotation_degrees or zoom or elastic_pixels) and float(shift_pixels).is_integer():
        return [RandomShift(int(shift_pixels), dtype="float32", name="random_shift")]
    return [RandomWarp(rotation_degrees=rotation_degrees, zoom=zoom, shift_pixels=shift_pixels,
                       elastic_pixels=elastic_pixels, dtype="float32", name="random_warp")]


def augment_images(images: np.ndarray, *, rotation_degrees: float = 0.0, shift_pixels: float = 0.0,
                   zoom: float = 0.0, elastic_pixels: float = 0.0, seed: int = 0, training: bool = True) -> np.ndarray:
    """`images` (N, 28, 28, 1) float32 in [0, 1] as training would see them (training=False: as inference does).

    The labels are untouched by construction: each image stays at its index, so the i-th label still names it.
    """
    keras.utils.set_random_seed(seed)
    batch = np.asarray(images, dtype="float32")
    for layer in augmentation_layers(rotation_degrees=rotation_degrees, shift_pixels=shift_pixels, zoom=zoom,
                                     elastic_pixels=elastic_pixels):
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
