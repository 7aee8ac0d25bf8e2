"""Is it a digit at all? A small network that reads the classifier's features and scores how digit-like a picture is.

The classifier always names a digit, even for a letter or a doodle, and often with a high probability, so its
largest probability tells digits from non-digits poorly (benchmarks/not_a_digit.py: it catches about a third
of non-digits). The features its last layer reads tell them apart far better. `fit_detector` trains a
one-hidden-layer network (scikit-learn's MLPClassifier) on the features of digits and of generated non-digits;
its output, the *digit score*, is its probability that the picture is a digit.

A fitted detector is a handful of arrays saved in `not_a_digit.npz` beside the model (never pickled).
`with_digit_score` joins it to a Keras classifier as a second output, so one call gives the probabilities
and the digit score, and `digits export` writes that joined model to ONNX: the exported file answers both
without Keras or this module.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path

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
    """digit score = sigmoid(relu(features @ hidden_weights + hidden_bias) @ output_weights + output_bias).

    The features' standardisation (mean and scale) is folded into the hidden layer's weights.
    """

    hidden_weights: np.ndarray  # (F, H)
    hidden_bias: np.ndarray  # (H,)
    output_weights: np.ndarray  # (H, 1)
    output_bias: np.ndarray  # (1,)

    @property
    def feature_count(self) -> int:
        return int(self.hidden_weights.shape[0])

    def scores(self, features: np.ndarray) -> np.ndarray:
        """float (N, F) features → float32 (N,) digit scores in [0, 1]."""
        hidden = np.maximum(np.asarray(features, np.float64) @ self.hidden_weights + self.hidden_bias, 0.0)
        logits = (hidden @ self.output_weights + self.output_bias)[:, 0]
        return (1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))).astype(np.float32)

    def save(self, path: str | Path) -> None:
        """Write the arrays as .npz through a temporary file beside `path`, so no half-written detector is left."""
        from digits.training.file_access import write_atomically

        saved = io.BytesIO()
        np.savez(saved, **{field.name: getattr(self, field.name) for field in fields(self)})
        write_atomically(Path(path), saved.getvalue())


# The shipped detector is 0.6 MB; a file, or a member of it, above this is not a detector digits wrote.
MAX_DETECTOR_BYTES = 4 * 2**20


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
            arrays = {field.name: np.asarray(_read_array(archive, field.name + ".npy"), np.float64)
                      for field in fields(DigitDetector)}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        # read_bounded and _read_array say why in words; the libraries' own messages mean little to a user.
        reason = str(error) if str(error).startswith(("it is", "its member")) else type(error).__name__
        raise DigitsError(f"Cannot read the not-a-digit detector {path} ({reason}); {REFIT}") from None
    hidden = arrays["hidden_weights"].shape
    if (len(hidden) != 2 or arrays["hidden_bias"].shape != hidden[1:] or arrays["output_weights"].shape
            != (hidden[1], 1) or arrays["output_bias"].shape != (1,) or not all(np.isfinite(a).all()
                                                                               for a in arrays.values())):
        raise DigitsError(f"The not-a-digit detector {path} holds arrays of the wrong shapes or non-finite "
                          f"numbers; {REFIT}")
    return DigitDetector(**arrays)


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


def fit_detector(digit_features: np.ndarray, other_features: np.ndarray, *, hidden_units: int = HIDDEN_UNITS,
                 seed: int = 0) -> DigitDetector:
    """Train the detector on (N, F) features of digits and (M, F) features of non-digits."""
    from sklearn.neural_network import MLPClassifier

    features = np.concatenate([digit_features, other_features]).astype(np.float64)  # (N + M, F)
    is_digit = np.r_[np.ones(len(digit_features)), np.zeros(len(other_features))]
    mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-6
    network = MLPClassifier((hidden_units,), max_iter=300, random_state=seed)
    network.fit((features - mean) / scale, is_digit)
    (hidden_weights, output_weights), (hidden_bias, output_bias) = network.coefs_, network.intercepts_
    # ((x - mean) / scale) @ W + b  ==  x @ (W / scale) + (b - (mean / scale) @ W)
    folded_weights = hidden_weights / scale[:, np.newaxis]
    return DigitDetector(hidden_weights=folded_weights, hidden_bias=hidden_bias - (mean / scale) @ hidden_weights,
                         output_weights=output_weights, output_bias=output_bias)


def feature_model(model):
    """A Keras model giving, for the classifier's input, its probabilities and the features its last layer reads."""
    import keras

    last = model.layers[-1]
    return keras.Model(model.inputs[0], [last.output, last.input], name=f"{model.name}_features")


def with_digit_score(model, detector: DigitDetector):
    """The Keras classifier with a second output, the detector's digit score: images → [(N, 10), (N, 1)]."""
    import keras

    last = model.layers[-1]
    features = last.input
    if features.shape[-1] != detector.feature_count:
        raise DigitsError(f"The not-a-digit detector reads {detector.feature_count} features but this model's last "
                          f"layer reads {features.shape[-1]}; fit the detector for this model.")
    hidden_layer = keras.layers.Dense(detector.hidden_weights.shape[1], activation="relu", name="digit_score_hidden",
                                      dtype="float32")
    score_layer = keras.layers.Dense(1, activation="sigmoid", name=SCORE_OUTPUT, dtype="float32")
    score = score_layer(hidden_layer(keras.ops.cast(features, "float32")))
    hidden_layer.set_weights([detector.hidden_weights.astype(np.float32), detector.hidden_bias.astype(np.float32)])
    score_layer.set_weights([detector.output_weights.astype(np.float32), detector.output_bias.astype(np.float32)])
    return keras.Model(model.inputs[0], [last.output, score], name=model.name)
