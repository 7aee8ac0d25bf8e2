"""Is it a digit at all? A small network that reads the classifier's features and scores how digit-like a picture is.

The classifier always names a digit, even for a letter or a doodle, and often with a high probability, so its
largest probability tells digits from non-digits poorly. `fit_detector` trains a one-hidden-layer network
(scikit-learn's MLPClassifier) on digits and generated non-digits; it reads the features the classifier's last
layer reads and two numbers that need no non-digit to fit: the Mahalanobis distance to the nearest digit class
under a class-conditional Gaussian fitted on MNIST training digits (`fit_class_gaussian`, Lee et al. 2018) and
the energy, the log-sum-exp of the logits (Liu et al. 2020). Its output, the *digit score*, is its probability
that the picture is a digit. benchmarks/not_a_digit.py --compare chose this combination over each part alone by
leaving one kind of non-digit out at a time (`digits.inference.not_a_digit_methods`).

A fitted detector is a handful of arrays saved in `not_a_digit.npz` beside the model (never pickled).
`with_digit_score` joins it to a Keras classifier as a second output, so one call gives the probabilities
and the digit score, and `digits export` writes that joined model to ONNX: the exported file answers both
without Keras or this module.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from digits.errors import DigitsError

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

    @property
    def has_density(self) -> bool:
        return self.whitening.size > 0

    @property
    def feature_count(self) -> int:
        return int(self.hidden_weights.shape[0]) - (DENSITY_INPUTS if self.has_density else 0)

    def inputs(self, features: np.ndarray) -> np.ndarray:
        """float (N, F) features → float64 (N, F) or (N, F + 2) inputs of the hidden layer."""
        features = np.asarray(features, np.float64)
        if not self.has_density:
            return features
        density = ClassGaussian(self.whitening, self.whitened_means)
        return np.c_[features, density.distances(features), energy(features @ self.logit_weights + self.logit_bias)]

    def scores(self, features: np.ndarray) -> np.ndarray:
        """float (N, F) features → float32 (N,) digit scores in [0, 1]."""
        hidden = np.maximum(self.inputs(features) @ self.hidden_weights + self.hidden_bias, 0.0)
        logits = (hidden @ self.output_weights + self.output_bias)[:, 0]
        return (1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))).astype(np.float32)

    def score(self, read) -> np.ndarray:
        """The digit scores of a `digits.inference.not_a_digit_fit.Read` (anything with .features)."""
        return self.scores(read.features)

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


def fit_class_gaussian(features: np.ndarray, labels: np.ndarray) -> ClassGaussian:
    """The class means and shared (within-class) covariance of (N, F) digit features with their (N,) labels."""
    features = np.asarray(features, np.float64)
    classes = np.unique(labels)
    means = np.stack([features[labels == label].mean(axis=0) for label in classes])  # (10, F)
    centred = features - means[np.searchsorted(classes, labels)]
    covariance = centred.T @ centred / len(features)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    eigenvalues = np.maximum(eigenvalues, 0.0) + SHRINKAGE * max(float(eigenvalues.mean()), 1e-12)
    whitening = eigenvectors / np.sqrt(eigenvalues)  # (F, F): columns scaled, so whitening @ whitening.T = inverse
    return ClassGaussian(whitening=whitening, whitened_means=means @ whitening)


def energy(logits: np.ndarray) -> np.ndarray:
    """Liu et al.'s (negative) energy, log-sum-exp of (N, 10) logits → (N,): high for what the classifier knows."""
    logits = np.asarray(logits, np.float64)
    peak = logits.max(axis=1)
    return peak + np.log(np.exp(logits - peak[:, np.newaxis]).sum(axis=1))


# The shipped detector is 6 MB (its whitening, 1152 × 1152 float32, is most of it); a file, or a member of it,
# above this is not a detector digits wrote.
MAX_DETECTOR_BYTES = 12 * 2**20
# A detector saved before the class density has only these members.
REQUIRED_ARRAYS = ("hidden_weights", "hidden_bias", "output_weights", "output_bias")


def load_detector(path: str | Path) -> DigitDetector:
    """A detector saved by `DigitDetector.save`, checked; a damaged or foreign file is one DigitsError.

    Memory stays bounded whatever the file claims: it must be a regular file of at most MAX_DETECTOR_BYTES
    (`read_bounded`), each member's declared size is checked before it is inflated and at most that much is
    inflated, and each array's declared shape must fit in the member that holds it before it is allocated.
    """
    from digits.training.file_access import read_bounded

    try:
        data = read_bounded(Path(path), MAX_DETECTOR_BYTES)
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = set(archive.namelist())
            arrays = {field_.name: np.asarray(_read_array(archive, field_.name + ".npy"), np.float64)
                      for field_ in fields(DigitDetector)
                      if field_.name in REQUIRED_ARRAYS or field_.name + ".npy" in members}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        # read_bounded and _read_array say why in words; the libraries' own messages mean little to a user.
        reason = str(error) if str(error).startswith(("it is", "its member")) else type(error).__name__
        raise DigitsError(f"Cannot read the not-a-digit detector {path} ({reason}); {REFIT}") from None
    if not _consistent(arrays):
        raise DigitsError(f"The not-a-digit detector {path} holds arrays of the wrong shapes or non-finite "
                          f"numbers; {REFIT}")
    return DigitDetector(**arrays)


def _consistent(arrays: dict[str, np.ndarray]) -> bool:
    """Whether the arrays make one detector: shapes that fit together, and finite numbers."""
    hidden = arrays["hidden_weights"].shape
    if (len(hidden) != 2 or arrays["hidden_bias"].shape != hidden[1:] or arrays["output_weights"].shape
            != (hidden[1], 1) or arrays["output_bias"].shape != (1,)
            or not all(np.isfinite(array).all() for array in arrays.values())):
        return False
    density = [name for name in ("whitening", "whitened_means", "logit_weights", "logit_bias") if name in arrays]
    if not density or all(arrays[name].size == 0 for name in density):
        return True
    feature_count = hidden[0] - DENSITY_INPUTS
    return len(density) == 4 and feature_count > 0 and (
        arrays["whitening"].shape == (feature_count, feature_count)
        and arrays["whitened_means"].ndim == 2 and arrays["whitened_means"].shape[1] == feature_count
        and arrays["logit_weights"].shape == (feature_count, arrays["whitened_means"].shape[0])
        and arrays["logit_bias"].shape == (arrays["whitened_means"].shape[0],))


def _read_array(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    """The .npy member `name` of an .npz archive, never inflating or allocating more than MAX_DETECTOR_BYTES."""
    member = archive.getinfo(name)
    if member.file_size > MAX_DETECTOR_BYTES:
        raise ValueError(f"its member {name} declares {member.file_size:,} bytes, more than a detector holds")
    with archive.open(member) as stream:
        content = stream.read(MAX_DETECTOR_BYTES + 1)
    if len(content) > MAX_DETECTOR_BYTES:
        raise ValueError(f"its member {name} inflates to more than a detector holds")
    buffer = io.BytesIO(content)
    version = np.lib.format.read_magic(buffer)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(buffer)
    if dtype.hasobject or int(np.prod(shape, dtype=object)) * dtype.itemsize > len(content) - buffer.tell():
        raise ValueError(f"its member {name} declares an array larger than the member")
    buffer.seek(0)
    return np.load(buffer, allow_pickle=False)


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


def _as_saved(array: np.ndarray) -> np.ndarray:
    """The array as `DigitDetector.save` keeps it (float32), so a detector scores the same before and after."""
    return np.asarray(array, np.float32).astype(np.float64)


def feature_model(model):
    """A Keras model giving, for the classifier's input, its probabilities and the features its last layer reads."""
    import keras

    last = model.layers[-1]
    return keras.Model(model.inputs[0], [last.output, last.input], name=f"{model.name}_features")


def with_digit_score(model, detector: DigitDetector):
    """The Keras classifier with a second output, the detector's digit score: images → [(N, 10), (N, 1)].

    Every step is a Keras layer or keras.ops call (matrix products, a minimum, a log-sum-exp), so `digits export`
    writes the whole score into the ONNX file.
    """
    import keras

    last = model.layers[-1]
    features = last.input
    if features.shape[-1] != detector.feature_count:
        raise DigitsError(f"The not-a-digit detector reads {detector.feature_count} features but this model's last "
                          f"layer reads {features.shape[-1]}; fit the detector for this model.")
    features = keras.ops.cast(features, "float32")
    inputs = features
    weights: list[tuple[keras.layers.Layer, list[np.ndarray]]] = []
    if detector.has_density:
        whiten = keras.layers.Dense(detector.feature_count, use_bias=False, name="digit_score_whiten", dtype="float32")
        # |z - m_c|^2 = |z|^2 + (|m_c|^2 - 2 z·m_c): the bracket is one Dense layer over z.
        to_means = keras.layers.Dense(len(detector.logit_bias), name="digit_score_to_means", dtype="float32")
        logits = keras.layers.Dense(len(detector.logit_bias), name="digit_score_logits", dtype="float32")
        whitened = whiten(features)
        squared = keras.ops.sum(keras.ops.square(whitened), axis=-1, keepdims=True) + to_means(whitened)
        distance = keras.ops.sqrt(keras.ops.maximum(keras.ops.min(squared, axis=-1, keepdims=True), 0.0))
        energy_ = keras.ops.logsumexp(logits(features), axis=-1, keepdims=True)
        inputs = keras.ops.concatenate([features, distance, energy_], axis=-1)
        weights += [(whiten, [detector.whitening]),
                    (to_means, [-2 * detector.whitened_means.T, (detector.whitened_means ** 2).sum(axis=1)]),
                    (logits, [detector.logit_weights, detector.logit_bias])]
    hidden_layer = keras.layers.Dense(detector.hidden_weights.shape[1], activation="relu", name="digit_score_hidden",
                                      dtype="float32")
    score_layer = keras.layers.Dense(1, activation="sigmoid", name=SCORE_OUTPUT, dtype="float32")
    score = score_layer(hidden_layer(inputs))
    weights += [(hidden_layer, [detector.hidden_weights, detector.hidden_bias]),
                (score_layer, [detector.output_weights, detector.output_bias])]
    for layer, arrays in weights:
        layer.set_weights([np.asarray(array, np.float32) for array in arrays])
    return keras.Model(model.inputs[0], [last.output, score], name=model.name)
