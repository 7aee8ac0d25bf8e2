"""The one way to turn prepared digits into probabilities, for a Keras model or an ONNX Runtime session.

`probabilities(model, images)` takes uint8 (N, 28, 28) MNIST-style images and returns float32 (N, 10)
probabilities; evaluation and ensembles call it. `read` also gives the digit score of a model joined to its
not-a-digit detector, and `reader` is `read` for a caller that reads many times: a loaded
`digits.inference.classifier.Classifier` holds one, and `digits predict`, `digits.predict` and the server all read
through it. This module sits below the study, the export and the server, and imports only `digits.data.mnist`,
`digits.errors` and (for file names and test-time shifts) `digits.training`: Keras or TensorFlow are imported only
when the model is a Keras model, so an ONNX model runs without them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from digits.data.mnist import to_model_input
from digits.errors import DigitsError
from digits.training.run_files import CALIBRATION_FILE  # noqa: F401  The fitted temperature and not-a-digit threshold.

# Images per inference call: large batches amortise the per-call overhead, and 1,000 MNIST images are 3 MB.
BATCH_SIZE = 1000
# How test-time copies (augment.TTA_SHIFTS) are described in tables and reports.
TTA_WORDS = "mean over 5 copies: the image and 1-pixel shifts up, down, left and right"


class OnnxModel:
    """An ONNX model read by ONNX Runtime: float32 (N, 28, 28, 1) in [0, 1] → float32 (N, 10) probabilities,
    and (N, 1) digit scores when it was exported with a not-a-digit detector.

    `threads` is ONNX Runtime's intra-op thread count (None: its default, one per core); a server answering
    one picture at a time wants 1, so that the other cores keep preparing pictures.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        # Silence ONNX Runtime's start-up warnings (3 = errors only); a broken file still raises.
        options.log_severity_level = 3
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001  onnxruntime raises its own exception types for damaged or foreign files.
            raise DigitsError(
                f"Cannot load an ONNX model from {path} ({type(error).__name__}); give a file written by "
                "`digits export`."
            ) from None
        (model_input,) = self.session.get_inputs()
        self.input_name = model_input.name
        self.path = Path(path)
        input_shape = tuple(model_input.shape[1:])
        output_shapes = [tuple(output.shape[1:]) for output in self.session.get_outputs()]
        if input_shape != (28, 28, 1) or output_shapes not in ([(10,)], [(10,), (1,)]):
            raise DigitsError(
                f"The ONNX model in {path} takes {input_shape} and gives {', '.join(map(str, output_shapes))}; "
                "digits needs a model from 28×28×1 images to 10 classes (and optionally a digit score)."
            )
        # A model exported with its not-a-digit detector (digits.inference.not_a_digit) gives the digit score second.
        self.gives_digit_score = len(output_shapes) == 2

    def __call__(self, model_input: np.ndarray) -> list[np.ndarray]:
        """float32 (N, 28, 28, 1) → [(N, 10) probabilities] or [(N, 10) probabilities, (N, 1) digit scores]."""
        return self.session.run(None, {self.input_name: model_input})


def is_keras_model(model) -> bool:
    """True for a Keras model, decided without importing Keras when it was never imported."""
    return not isinstance(model, OnnxModel) and hasattr(model, "predict") and hasattr(model, "layers")


def probabilities(model, images: np.ndarray, *, tta: bool = False, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """uint8 (N, 28, 28) images → float32 (N, 10) probabilities of a Keras model or an `OnnxModel`.

    With tta, each image is read 5 times (itself and 1-pixel shifts) and the probabilities averaged.
    """
    if tta:
        from digits.training.augment import shifted_copies

        return average_probabilities([probabilities(model, copy, batch_size=batch_size)
                                      for copy in shifted_copies(np.asarray(images))]).astype(np.float32)
    return read(model, images, batch_size=batch_size)[0]


def read(model, images: np.ndarray, *, batch_size: int = BATCH_SIZE) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 (N, 28, 28) images → float32 (N, 10) probabilities, and float32 (N,) digit scores for a model that
    gives them (joined to its detector by `digits.inference.not_a_digit_graph.with_digit_score`, or exported so), else
    None."""
    return _read_batches(_model_call(model), model, images, batch_size)


def reader(model) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]:
    """`read(model, ·)` for a caller that reads many times, a few images or thousands at a time.

    An `OnnxModel` is called as is. A Keras model on TensorFlow is traced into a graph now (about 0.1 s for the
    shipped model on 2 cores): called eagerly it costs several milliseconds per call whatever the batch size,
    traced about 1 ms for one image, and 10,000 images take half the time. The answers are those of `read`, up to
    float rounding.
    """
    call = _traced_call(model) or _model_call(model)
    return lambda images: _read_batches(call, model, images, BATCH_SIZE)


def _read_batches(call: Callable[[np.ndarray], list[np.ndarray]], model, images: np.ndarray,
                  batch_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """`read` with the model's call for one batch of model input."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    images = np.asarray(images)
    to_model_input(images[:0])  # Checks the dtype and shape before any work.
    if len(images) == 0:
        return np.zeros((0, 10), np.float32), (np.zeros(0, np.float32) if gives_digit_score(model) else None)
    batches = [call(to_model_input(images[start:start + batch_size])) for start in range(0, len(images), batch_size)]
    return _joined(batches)


def gives_digit_score(model) -> bool:
    """Whether the model's second output is a digit score (see `read`)."""
    if isinstance(model, OnnxModel):
        return model.gives_digit_score
    return is_keras_model(model) and len(model.outputs) == 2


def _joined(batches: list[list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray | None]:
    """Each batch's [probabilities] or [probabilities, digit scores] → the whole (N, 10) and (N,) arrays."""
    probabilities = np.concatenate([np.asarray(batch[0]) for batch in batches]).astype(np.float32, copy=False)
    if len(batches[0]) < 2:
        return probabilities, None
    return probabilities, np.concatenate([np.asarray(batch[1]).reshape(-1) for batch in batches]).astype(np.float32)


def _model_call(model) -> Callable[[np.ndarray], list[np.ndarray]]:
    """The model's eager call: float32 (N, 28, 28, 1) → [(N, 10)] or [(N, 10), (N, 1)] arrays."""
    if isinstance(model, OnnxModel):
        return model
    if is_keras_model(model):
        # Calling the model directly costs less than `model.predict`'s loop machinery for one batch.
        def call(model_input: np.ndarray) -> list[np.ndarray]:
            outputs = model(model_input, training=False)
            return [np.asarray(output) for output in outputs] if isinstance(outputs, list | tuple) else [
                np.asarray(outputs)]

        return call
    raise TypeError(f"Expected a Keras model or an OnnxModel, got {type(model).__name__}")


def _traced_call(model) -> Callable[[np.ndarray], list[np.ndarray]] | None:
    """The call of a Keras model on TensorFlow as a graph traced now, or None for any other model."""
    if isinstance(model, OnnxModel) or not is_keras_model(model):
        return None
    import keras

    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32)])
    def traced(model_input):
        return model(model_input, training=False)

    def call(model_input: np.ndarray) -> list[np.ndarray]:
        outputs = traced(model_input)
        return [output.numpy() for output in outputs] if isinstance(outputs, list | tuple) else [outputs.numpy()]

    call(np.zeros((1, 28, 28, 1), np.float32))  # Trace now, so the first caller does not wait for it.
    return call


def average_probabilities(probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of several (N, 10) probability arrays for the same N images: each row still sums to 1."""
    if not probabilities:
        raise ValueError("average_probabilities needs at least one array")
    shapes = {np.shape(member) for member in probabilities}
    if len(shapes) != 1:
        raise ValueError(f"members predicted arrays of different shapes: {sorted(shapes)}")
    # (members, N, 10) -> (N, 10)
    return np.mean(np.stack([np.asarray(member, dtype="float64") for member in probabilities]), axis=0)


def with_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities softened (temperature > 1) or sharpened (< 1): softmax(log p / T), the same as dividing
    the logits by T, since log p differs from the logits by a constant per row."""
    if temperature == 1.0:
        return np.asarray(probabilities, dtype=np.float32)
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, not {temperature}")
    scaled = np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), 1e-30)) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exponentials = np.exp(scaled)
    return (exponentials / exponentials.sum(axis=-1, keepdims=True)).astype(np.float32)
