"""Is it a digit at all? A small network that reads the classifier's features and scores how digit-like a picture is.

The classifier always names a digit, even for a letter or a doodle, and often with a high probability, so its
largest probability tells digits from non-digits poorly. `fit_detector` trains a one-hidden-layer network
(scikit-learn's MLPClassifier) on digits and generated non-digits; it reads the features the classifier's last
layer reads and two numbers that need no non-digit to fit: the Mahalanobis distance to the nearest digit class
under a class-conditional Gaussian fitted on MNIST training digits (`fit_class_gaussian`, Lee et al. 2018) and
the energy, the log-sum-exp of the logits (Liu et al. 2020). Its output, the *digit score*, is its probability
that the picture is a digit. The shipped method, layer distances (`fit_layer_distances`, Lee et al.'s feature
ensemble), is a logistic regression over the distances to every class under that density, under a second one
over the earlier layers' channel means and under one per earlier map over its channels' means in each cell of a
3 × 3 grid (where the strokes are), the log-probabilities and the channel means, stored as the same network
with two hidden units; benchmarks/not_a_digit.py --compare chose it by leaving one kind of non-digit out at a time
(`digits.inference.not_a_digit_methods`).

A fitted detector is a handful of arrays saved in `not_a_digit.npz` beside the model (never pickled), read back
within bounds by `digits.inference.not_a_digit_file.load_detector`.
`digits.inference.not_a_digit_graph.with_digit_score` joins it to a Keras classifier as a second output, so one
call gives the probabilities and the digit score, and `digits export` writes that joined model to ONNX: the
exported file answers both without Keras or this module.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

# The file beside a model (a run folder or the shipped model) holding its fitted detector.
DETECTOR_FILE = "not_a_digit.npz"
# Units of the hidden layer: 64 caught a little more than 32 in a one-off comparison made while choosing it.
HIDDEN_UNITS = 64
# What to do about a damaged detector: a run's is fitted again by `digits evaluate --calibrate`; the shipped
# model's comes with the package.
REFIT = ("fit it again with `digits evaluate RUN --calibrate` (for the shipped model, reinstall digits), or remove "
         "the \"not_a_digit\" entry from the calibration.json beside it.")
# The name of the exported model's second output.
SCORE_OUTPUT = "digit_score"


@dataclass(frozen=True)
class DigitDetector:
    """digit score = sigmoid(relu(inputs @ hidden_weights + hidden_bias) @ output_weights + output_bias).

    The inputs are the F features, followed, for a detector fitted with a class density (`ClassGaussian`), by two
    numbers that say how far the picture lies from every digit the classifier learnt: the Mahalanobis distance to
    the nearest class and the energy (the log-sum-exp of the logits). A detector without those (saved before
    them) reads the features alone. The inputs' standardisation is folded into the hidden layer's weights.
    """

    hidden_weights: np.ndarray  # (F, H), or (F + 2, H) with a density
    hidden_bias: np.ndarray  # (H,)
    output_weights: np.ndarray  # (H, 1)
    output_bias: np.ndarray  # (1,)
    # The class density and the classifier's last layer (for the logits), or four empty arrays.
    whitening: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (F, F)
    whitened_means: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (10, F)
    logit_weights: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (F, 10)
    logit_bias: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (10,)
    # Layer distances (Lee et al.'s feature ensemble): a second class density over the P channel means of the
    # earlier activation maps (`digits.inference.not_a_digit_graph.activation_maps`), or two empty arrays.
    pooled_whitening: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (P, P)
    pooled_whitened_means: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (10, P)
    # Where on the picture (issue 23): one class density per earlier map wider than GRID_CELLS over its channels'
    # means in each cell of a GRID_CELLS × GRID_CELLS grid (`grid_means`), stored as one block-diagonal whitening
    # over the G numbers of all of them and each block's size, or three empty arrays (a detector saved before).
    grid_whitening: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (G, G), block-diagonal
    grid_whitened_means: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (10, G)
    grid_sizes: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (B,) each block's share of G

    @property
    def has_density(self) -> bool:
        return self.whitening.size > 0

    @property
    def has_layer_distances(self) -> bool:
        return self.pooled_whitening.size > 0

    @property
    def has_grids(self) -> bool:
        return self.grid_whitening.size > 0

    @property
    def grid_count(self) -> int:
        return int(self.grid_whitening.shape[0])

    def grid_densities(self) -> list[ClassGaussian]:
        """The grid's class densities, one per block of `grid_whitening` (none without grids)."""
        ends = np.cumsum(self.grid_sizes.astype(int))
        return [ClassGaussian(self.grid_whitening[start:end, start:end], self.grid_whitened_means[:, start:end])
                for start, end in zip(np.r_[0, ends[:-1]], ends, strict=True)] if self.has_grids else []

    @property
    def feature_count(self) -> int:
        if self.has_layer_distances:
            return int(self.whitening.shape[0])
        return int(self.hidden_weights.shape[0]) - (DENSITY_INPUTS if self.has_density else 0)

    @property
    def pooled_count(self) -> int:
        return int(self.pooled_whitening.shape[0])

    def inputs(self, features: np.ndarray, pooled: np.ndarray | None = None, grids: np.ndarray | None = None
               ) -> np.ndarray:
        """float (N, F) features [and (N, P) channel means, (N, G) grid cells' channel means] → float64 inputs of
        the hidden layer: (N, F), (N, F + 2), or with layer distances (N, 30 + 10 B + P): sorted, the distances to
        each class under the densities of the features, of the channel means and of each grid block, and the
        log-probabilities, then the channel means."""
        features = np.asarray(features, np.float64)
        if not self.has_density:
            return features
        density = ClassGaussian(self.whitening, self.whitened_means)
        logits = features @ self.logit_weights + self.logit_bias
        if not self.has_layer_distances:
            return np.c_[features, density.distances(features), energy(logits)]
        if pooled is None:
            raise ValueError("a layer-distances detector needs the channel means of the earlier layers")
        pooled = np.asarray(pooled, np.float64)
        pooled_density = ClassGaussian(self.pooled_whitening, self.pooled_whitened_means)
        grid_distances = []
        if self.has_grids:
            if grids is None:
                raise ValueError("this layer-distances detector needs the grid cells' channel means too")
            grids = np.asarray(grids, np.float64)
            ends = np.cumsum(self.grid_sizes.astype(int))
            grid_distances = [np.sort(grid_density.class_distances(grids[:, end - len(grid_density.whitening):end]),
                                      axis=1) for grid_density, end in zip(self.grid_densities(), ends, strict=True)]
        return np.concatenate([np.sort(density.class_distances(features), axis=1),
                               np.sort(pooled_density.class_distances(pooled), axis=1), *grid_distances,
                               np.sort(logits - energy(logits)[:, np.newaxis], axis=1), pooled], axis=1)

    def scores(self, features: np.ndarray, pooled: np.ndarray | None = None, grids: np.ndarray | None = None
               ) -> np.ndarray:
        """float (N, F) features [and (N, P) channel means and (N, G) grid cells' means, for layer distances] →
        float32 (N,) digit scores."""
        hidden = np.maximum(self.inputs(features, pooled, grids) @ self.hidden_weights + self.hidden_bias, 0.0)
        logits = (hidden @ self.output_weights + self.output_bias)[:, 0]
        return (1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))).astype(np.float32)

    def score(self, read) -> np.ndarray:
        """The digit scores of a `digits.inference.not_a_digit_fit.Read` (anything with .features, .pooled and
        .grids)."""
        return self.scores(read.features, read.pooled if self.has_layer_distances else None,
                           read.grids if self.has_grids else None)

    def save(self, path: str | Path) -> None:
        """Write the arrays as .npz through a temporary file beside `path`, so no half-written detector is left."""
        from digits.training.file_access import write_atomically

        saved = io.BytesIO()
        # float32 halves the file (the whitening is most of it) and is what the joined Keras model computes in.
        arrays: dict[str, Any] = {field_.name: np.asarray(getattr(self, field_.name), np.float32)
                                  for field_ in fields(self)}
        np.savez(saved, **arrays)
        write_atomically(Path(path), saved.getvalue())


# The two numbers a density adds to the detector's inputs: distance to the nearest class, and energy.
DENSITY_INPUTS = 2
# Added to every eigenvalue of the shared covariance, as a fraction of their mean: directions the digits never vary
# in (ReLU features that are always 0) would otherwise make any ink there infinitely far.
SHRINKAGE = 0.01
# Layer distances' densities shrink ten times more: with the grids, the worst kind of non-digit caught by a
# detector that never saw it rose from 65.7 % at 0.01 to 71.0 % at 0.1 (70.2 % at 0.3, 70.4 % at 1; the
# comparison's share of the training part, docs/inference.md): a sharp density calls the new kinds far, but so too
# the digits drawn unlike the training ones.
LAYER_DISTANCE_SHRINKAGE = 0.1
# Each earlier map wider than this is also summarised over a GRID_CELLS × GRID_CELLS grid (`grid_means`): where on
# the picture the strokes are, which letters and scribbles put where digits do not.
GRID_CELLS = 3


@dataclass(frozen=True)
class ClassGaussian:
    """Lee et al.'s class-conditional Gaussian over the features, one mean per digit and a shared covariance.

    Stored whitened: z = features @ whitening has the identity as covariance, so the squared Mahalanobis distance
    to class c is |z - whitened_means[c]|^2. Fitted on digits alone; it needs no example of a non-digit.
    """

    whitening: np.ndarray  # (F, F)
    whitened_means: np.ndarray  # (10, F)

    def distances(self, features: np.ndarray) -> np.ndarray:
        """float (N, F) features → float64 (N,) Mahalanobis distance to the nearest class (not squared)."""
        return self.class_distances(features).min(axis=1)

    def class_distances(self, features: np.ndarray) -> np.ndarray:
        """float (N, F) features → float64 (N, 10) Mahalanobis distance to each class (not squared)."""
        whitened = np.asarray(features, np.float64) @ self.whitening  # (N, F)
        squared = ((whitened ** 2).sum(axis=1, keepdims=True) - 2 * whitened @ self.whitened_means.T
                   + (self.whitened_means ** 2).sum(axis=1))  # (N, 10)
        return np.sqrt(np.maximum(squared, 0.0))


def fit_class_gaussian(features: np.ndarray, labels: np.ndarray, shrinkage: float = SHRINKAGE) -> ClassGaussian:
    """The class means and shared (within-class) covariance of (N, F) digit features with their (N,) labels, each
    eigenvalue raised by `shrinkage` of their mean."""
    features = np.asarray(features, np.float64)
    classes = np.unique(labels)
    means = np.stack([features[labels == label].mean(axis=0) for label in classes])  # (10, F)
    centred = features - means[np.searchsorted(classes, labels)]
    covariance = centred.T @ centred / len(features)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    eigenvalues = np.maximum(eigenvalues, 0.0) + shrinkage * max(float(eigenvalues.mean()), 1e-12)
    whitening = eigenvectors / np.sqrt(eigenvalues)  # (F, F): columns scaled, so whitening @ whitening.T = inverse
    return ClassGaussian(whitening=whitening, whitened_means=means @ whitening)


def energy(logits: np.ndarray) -> np.ndarray:
    """Liu et al.'s (negative) energy, log-sum-exp of (N, 10) logits → (N,): high for what the classifier knows."""
    logits = np.asarray(logits, np.float64)
    peak = logits.max(axis=1)
    return peak + np.log(np.exp(logits - peak[:, np.newaxis]).sum(axis=1))


def fit_detector(digit_features: np.ndarray, other_features: np.ndarray, *, gaussian: ClassGaussian | None = None,
                 last_layer: tuple[np.ndarray, np.ndarray] | None = None, hidden_units: int = HIDDEN_UNITS,
                 seed: int = 0) -> DigitDetector:
    """Train the detector on (N, F) features of digits and (M, F) features of non-digits.

    gaussian and last_layer (the classifier's (F, 10) kernel and (10,) bias, for the logits): add the distance to
    the nearest class and the energy to the inputs. Give both or neither.
    """
    from sklearn.neural_network import MLPClassifier

    density: dict[str, np.ndarray] = {}
    if gaussian is not None and last_layer is not None:
        density = {"whitening": gaussian.whitening, "whitened_means": gaussian.whitened_means,
                   "logit_weights": last_layer[0], "logit_bias": last_layer[1]}
        density = {name: _as_saved(array) for name, array in density.items()}
    elif gaussian is not None or last_layer is not None:
        raise ValueError("fit_detector needs both gaussian and last_layer, or neither")
    inputs_of = DigitDetector(np.zeros((0, 0)), np.zeros(0), np.zeros((0, 1)), np.zeros(1), **density).inputs
    inputs = np.concatenate([inputs_of(digit_features), inputs_of(other_features)])  # (N + M, F [+ 2])
    is_digit = np.r_[np.ones(len(digit_features)), np.zeros(len(other_features))]
    mean, scale = inputs.mean(axis=0), inputs.std(axis=0) + 1e-6
    network = MLPClassifier((hidden_units,), max_iter=300, random_state=seed)
    network.fit(((inputs - mean) / scale).astype(np.float32), is_digit)  # float32: twice as fast as float64
    (hidden_weights, output_weights), (hidden_bias, output_bias) = network.coefs_, network.intercepts_
    # ((x - mean) / scale) @ W + b  ==  x @ (W / scale) + (b - (mean / scale) @ W)
    return DigitDetector(hidden_weights=_as_saved(hidden_weights / scale[:, np.newaxis]),
                         hidden_bias=_as_saved(hidden_bias - (mean / scale) @ hidden_weights),
                         output_weights=_as_saved(output_weights), output_bias=_as_saved(output_bias), **density)


# Chosen by the export check of a briefly trained run (quick-cnn, 1 epoch on 2,000 digits): max |Δ digit score|
# between Keras and ONNX 7.6e-05 unscaled, 3.6e-05 at 0.1, 1.0e-05 at 0.3, 5.9e-06 at 1 (the check allows 1e-04).
CHANNEL_SCALE_FLOOR = 0.3


def fit_layer_distances(digits: tuple[np.ndarray, ...], others: tuple[np.ndarray, ...], *,
                        gaussian: ClassGaussian, pooled_gaussian: ClassGaussian,
                        last_layer: tuple[np.ndarray, np.ndarray],
                        grid_gaussians: tuple[ClassGaussian, ...] = ()) -> DigitDetector:
    """Lee et al.'s feature ensemble: a logistic regression over the layer-distance inputs (`DigitDetector.inputs`)
    of digits and non-digits, each given as ((N, F) features, (N, P) channel means[, (N, G) grid cells' means]);
    grid_gaussians: one density per block of the grid cells' means (`grid_means`), or none.

    The regression is stored as the detector's network with two hidden units, relu(z) - relu(-z) = z, so every
    reader of a detector (numpy, the joined Keras model, ONNX) scores it unchanged.
    """
    from sklearn.linear_model import LogisticRegression

    densities = {name: _as_saved(array) for name, array in {
        "whitening": gaussian.whitening, "whitened_means": gaussian.whitened_means,
        "logit_weights": last_layer[0], "logit_bias": last_layer[1],
        "pooled_whitening": pooled_gaussian.whitening, "pooled_whitened_means": pooled_gaussian.whitened_means}.items()}
    if grid_gaussians:
        densities.update(grid_whitening=_as_saved(block_diagonal([density.whitening for density in grid_gaussians])),
                         grid_whitened_means=_as_saved(np.concatenate([density.whitened_means
                                                                       for density in grid_gaussians], axis=1)),
                         grid_sizes=np.array([len(density.whitening) for density in grid_gaussians], np.float64))
    inputs_of = DigitDetector(np.zeros((0, 0)), np.zeros(0), np.zeros((0, 1)), np.zeros(1), **densities).inputs
    inputs = np.concatenate([inputs_of(*digits), inputs_of(*others)])  # (N + M, 30 + 10 B + P)
    is_digit = np.r_[np.ones(len(digits[0])), np.zeros(len(others[0]))]
    mean, scale = inputs.mean(axis=0), inputs.std(axis=0)
    # The channel means are standardised by at least CHANNEL_SCALE_FLOOR of the widest one's spread, so the
    # regression's L2 penalty keeps a nearly dead channel's weight small: unscaled, such a weight (up to 2,700)
    # turned the 4e-07 by which ONNX Runtime's convolutions differ from TensorFlow's into 7.6e-05 of digit score.
    channels = slice(inputs.shape[1] - pooled_gaussian.whitening.shape[0], None)
    scale[channels] = np.maximum(scale[channels], CHANNEL_SCALE_FLOOR * scale[channels].max())
    scale += 1e-6
    regression = LogisticRegression(max_iter=2000)
    regression.fit((inputs - mean) / scale, is_digit)
    weights = regression.coef_[0] / scale  # standardisation folded in, as in fit_detector
    bias = float(regression.intercept_[0] - (mean / scale) @ regression.coef_[0])
    return DigitDetector(hidden_weights=_as_saved(np.c_[weights, -weights]), hidden_bias=_as_saved(np.r_[bias, -bias]),
                         output_weights=_as_saved(np.array([[1.0], [-1.0]])), output_bias=np.zeros(1), **densities)


def block_diagonal(blocks: list[np.ndarray]) -> np.ndarray:
    """Square (D_i, D_i) matrices → the (ΣD, ΣD) matrix holding them on its diagonal, zeros elsewhere."""
    from scipy.linalg import block_diag

    return np.asarray(block_diag(*blocks), np.float64)


def grid_window(side: int, cells: int = GRID_CELLS) -> tuple[int, int]:
    """The (size, stride) of the square windows that cover a side × side map in cells × cells cells: stride
    side // cells, each window as wide as it must be to reach the far edge (14 → windows of 6 every 4, 7 → 3
    every 2), so neighbouring cells overlap by at most a few rows."""
    stride = side // cells
    return side - (cells - 1) * stride, stride


def grid_means(maps: np.ndarray, cells: int = GRID_CELLS) -> np.ndarray:
    """(N, S, S, C) activation maps → (N, cells * cells * C) each channel's mean in each cell (`grid_window`),
    cell by cell, row-major: what Keras' AveragePooling2D then a reshape gives."""
    size, stride = grid_window(maps.shape[1], cells)
    means = [maps[:, row * stride:row * stride + size, column * stride:column * stride + size].mean(axis=(1, 2))
             for row in range(cells) for column in range(cells)]  # cells² × (N, C)
    return np.stack(means, axis=1).reshape(len(maps), -1)


def _as_saved(array: np.ndarray) -> np.ndarray:
    """The array as `DigitDetector.save` keeps it (float32), so a detector scores the same before and after."""
    return np.asarray(array, np.float32).astype(np.float64)
