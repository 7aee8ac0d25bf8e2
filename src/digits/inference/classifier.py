"""A loaded model that reads prepared 28×28 digits: the shipped model, a run's model, a .keras or an .onnx file.

`load_classifier()` loads once (the shipped model on ONNX Runtime when it is installed, without TensorFlow).
`Classifier.classify` is the one way digits reads pictures, for `digits predict`, `digits.predict` and the server:
it takes uint8 (N, 28, 28) arrays from `digits.pictures.prepare` and runs the model once through
`digits.inference.runtime`, giving `Predictions`: the probabilities rescaled by the model's temperature, the
not-a-digit detector's digit scores, and each picture's verdict (`Classifier.verdict`: does it look like a digit
at all?).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digits.data.mnist import CLASSES, IMAGE_SIDE
from digits.errors import DigitsError
from digits.inference.not_a_digit import DETECTOR_FILE, DigitDetector
from digits.inference.not_a_digit_file import load_detector
from digits.inference.prediction import DIGIT, NOT_A_DIGIT, Predictions
from digits.inference.runtime import CALIBRATION_FILE, OnnxModel, reader, with_temperature

PRETRAINED_DIR = Path(__file__).parents[1] / "pretrained"
PRETRAINED_MODEL = PRETRAINED_DIR / "model.keras"
# The shipped model is a run folder of `digits train pretrained`; `digits evaluate` measured its test accuracy.
PRETRAINED_EVALUATION = PRETRAINED_DIR / "evaluation" / "evaluation.json"
# The shipped model exported by `digits export src/digits/pretrained/model.keras --format onnx`, and its sidecar.
PRETRAINED_ONNX = PRETRAINED_DIR / "model.onnx"
PRETRAINED_ONNX_INFO = PRETRAINED_DIR / "model.onnx.json"
PRETRAINED_CALIBRATION = PRETRAINED_DIR / CALIBRATION_FILE


@dataclass
class Classifier:
    """A loaded model and what is known about it (architecture, parameters, test_accuracy, source).

    `model` is a keras.Model or a `digits.inference.runtime.OnnxModel`; `classify` answers the same for both, with
    the not-a-digit detector's digit score when the model has one (`digits.inference.not_a_digit`).
    """

    name: str
    model: object  # Typed loosely so that importing this module imports neither Keras nor ONNX Runtime.
    info: dict = field(default_factory=dict)
    temperature: float = 1.0  # Divides the logits; fitted on the holdout by `digits evaluate --calibrate`.
    # When a picture is called no digit: {"score": "digit_score" or "max_probability", "threshold": ...,
    # "max_probability_threshold": ... (used where the digit score is not available)}.
    not_a_digit: dict | None = None
    detector: DigitDetector | None = None  # For a Keras model; an exported ONNX model carries its own.
    # `digits.inference.runtime.reader` of the model joined to its detector, built on the first call.
    _reader: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]] | None = field(default=None, repr=False)

    @property
    def runtime(self) -> str:
        return "onnxruntime" if isinstance(self.model, OnnxModel) else "keras"

    def classify(self, images: np.ndarray) -> Predictions:
        """uint8 (N, 28, 28) MNIST-style images → their `Predictions`: (N, 10) calibrated probabilities, (N,) digit
        scores (NaN without a detector) and (N,) verdicts, from one run of the model."""
        if self._reader is None:
            self._reader = reader(self._model_with_digit_score())
        model_probabilities, digit_scores = self._reader(images)  # (N, 10), (N,) or None
        probabilities = with_temperature(model_probabilities, self.temperature)
        if digit_scores is None:
            digit_scores = np.full(len(probabilities), np.nan, np.float32)
        return Predictions(probabilities, digit_scores, self.verdicts(probabilities, digit_scores))

    def _model_with_digit_score(self):
        """The Keras model joined to its detector, or the model itself (an exported ONNX model carries its own)."""
        if self.detector is None or isinstance(self.model, OnnxModel):
            return self.model
        from digits.inference.not_a_digit_graph import with_digit_score

        return with_digit_score(self.model, self.detector)

    def verdicts(self, probabilities: np.ndarray, digit_scores: np.ndarray | None = None) -> np.ndarray:
        """`verdict` for each row of (N, 10) probabilities and (N,) digit scores (NaN or None: none): (N,) str."""
        # A row at a time in Python lists: for the server's one or few pictures, NumPy's calls cost more.
        best = [max(row) for row in np.asarray(probabilities).tolist()]
        scores = [math.nan] * len(best) if digit_scores is None else np.asarray(digit_scores).tolist()
        return np.array([self._verdict(probability, score) for probability, score in zip(best, scores, strict=True)],
                        dtype=str)

    def verdict(self, probabilities: np.ndarray, digit_score: float | None = None) -> str:
        """DIGIT, or NOT_A_DIGIT when the digit score (or, without one, the best digit's probability) is under
        the model's measured threshold (benchmarks/not_a_digit.py); always DIGIT for a model without one."""
        return self._verdict(float(np.max(probabilities)), digit_score)

    def _verdict(self, best_probability: float, digit_score: float | None) -> str:
        settings = self.not_a_digit
        if settings is None:
            return DIGIT
        if settings.get("score") == "digit_score":
            if digit_score is not None and not math.isnan(digit_score):
                return NOT_A_DIGIT if digit_score < settings["threshold"] else DIGIT
            threshold = settings.get("max_probability_threshold")
        else:
            threshold = settings["threshold"]
        return NOT_A_DIGIT if threshold is not None and best_probability < threshold else DIGIT


def load_classifier(spec: str | Path | None = None, *, threads: int | None = None,
                    prefer_onnx: bool = True) -> Classifier:
    """The shipped model (None), a run folder written by `digits train`, a .keras or an exported .onnx file.

    The shipped model runs on ONNX Runtime when it is installed (no TensorFlow) and prefer_onnx, else on Keras.
    threads: ONNX Runtime's threads per call (None: one per core).
    """
    if spec is None:
        return _load_pretrained(threads, prefer_onnx)
    path = Path(spec)
    if not path.exists():
        raise DigitsError(
            f"There is no model at {path}; give a run folder, a .keras or .onnx file, or leave `model` out."
        )
    if path.is_dir():
        return _load_run(path)
    if path.suffix == ".onnx":
        return _load_onnx(path, threads)
    if path.suffix != ".keras":
        raise DigitsError(f"{path} is not a .keras or .onnx model file; give a run folder or such a file.")
    model = _load_keras_file(path)
    info = {"architecture": model.name, "parameters": model.count_params(), "test_accuracy": None, "source": str(path)}
    return Classifier(name=path.stem if path.stem != "model" else path.parent.name or "model", model=model, info=info)


def runs_on_onnx(spec: str | Path | None) -> bool:
    """Whether `load_classifier(spec)` will run the model on ONNX Runtime (and never import TensorFlow)."""
    return _shipped_onnx_usable() if spec is None else Path(spec).suffix == ".onnx"


def _load_pretrained(threads: int | None, prefer_onnx: bool) -> Classifier:
    if prefer_onnx and _shipped_onnx_usable():
        classifier = _load_onnx(PRETRAINED_ONNX, threads)
        classifier.name = "pretrained"
        classifier.info.update({key: value for key, value in _pretrained_description().items() if value is not None})
        classifier.info["source"] = "shipped with digits (src/digits/pretrained/model.onnx)"
        # calibration.json beside the model is the source of truth; the sidecar copies it at export time.
        if PRETRAINED_CALIBRATION.is_file():
            settings = _inference_settings(PRETRAINED_CALIBRATION)  # no detector: ONNX has it
            classifier.temperature, classifier.not_a_digit = settings["temperature"], settings["not_a_digit"]
        return classifier
    if not PRETRAINED_MODEL.is_file():
        raise DigitsError(
            f"The shipped model {PRETRAINED_MODEL} is missing; reinstall digits or give `model` (a run folder, "
            ".keras or .onnx file)."
        )
    model = _load_keras_file(PRETRAINED_MODEL)
    description = _pretrained_description()
    info = {
        "architecture": description["architecture"] or model.name,
        "parameters": model.count_params(),
        "test_accuracy": description["test_accuracy"],
        "source": "shipped with digits (src/digits/pretrained/model.keras)",
        "command": description["command"],
    }
    return Classifier(name="pretrained", model=model, info=info,
                      **_inference_settings(PRETRAINED_CALIBRATION, PRETRAINED_DIR))


def _pretrained_description() -> dict:
    """The shipped run's architecture, measured test accuracy and the command that trains it again."""
    config = _read_optional_json(PRETRAINED_DIR / "config.json")
    evaluation = _read_optional_json(PRETRAINED_EVALUATION).get("evaluation", {})
    recipe = config.get("recipe")
    recipe = recipe if isinstance(recipe, dict) else {}
    return {"architecture": recipe.get("model"), "test_accuracy": evaluation.get("accuracy"),
            "command": f"digits train {config['preset']}" if "preset" in config else None}


def _shipped_onnx_usable() -> bool:
    """ONNX Runtime is installed and model.onnx was exported from the model.keras shipped beside it."""
    if importlib.util.find_spec("onnxruntime") is None or not PRETRAINED_ONNX.is_file():
        return False
    sidecar = _read_optional_json(PRETRAINED_ONNX_INFO)
    # A model.keras retrained, or a detector fitted again, without exporting again must not be shadowed by the
    # old model.onnx.
    detector = PRETRAINED_DIR / DETECTOR_FILE
    return ((not PRETRAINED_MODEL.is_file() or sidecar.get("source_sha256") == file_sha256(PRETRAINED_MODEL))
            and (not detector.is_file() or sidecar.get("detector_sha256") == file_sha256(detector)))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load_onnx(path: Path, threads: int | None) -> Classifier:
    sidecar = _read_optional_json(path.with_name(path.name + ".json"))
    info = {
        "architecture": sidecar.get("architecture"),
        "parameters": sidecar.get("parameters"),
        "test_accuracy": sidecar.get("test_accuracy"),
        "source": str(path),
    }
    name = sidecar.get("name") or (path.stem if path.stem != "model" else path.parent.name or "model")
    return Classifier(name=name, model=OnnxModel(path, threads=threads), info=info,
                      **_inference_settings(path.with_name(path.name + ".json"), content=sidecar))


def _inference_settings(path: Path, folder: Path | None = None, *, content: dict | None = None) -> dict:
    """The temperature, not-a-digit settings and detector recorded in `path`: a folder's calibration.json, or an
    exported model's sidecar whose `content` was read already. A NaN, infinite or out-of-range temperature or
    threshold is one sentence naming the file (digits.training.run_files declares them). The detector is read from
    `folder` (a run or the shipped model); an ONNX file carries its own."""
    from digits.training.runs import check_calibration, read_calibration

    settings = read_calibration(path) if content is None else check_calibration(content, path)
    temperature = settings.get("temperature") or 1.0
    not_a_digit = settings.get("not_a_digit")
    detector = None
    if folder is not None and not_a_digit is not None and not_a_digit.get("score") == "digit_score":
        detector = load_detector(folder / DETECTOR_FILE)
    return {"temperature": float(temperature), "not_a_digit": not_a_digit, "detector": detector}


def _load_run(path: Path) -> Classifier:
    from digits.training.runs import load_model, load_run

    run = load_run(path)  # Refuses a missing, damaged or unfinished run in one sentence.
    # Its calibration and detector are checked before Keras loads the model (seconds), so a damaged one is refused
    # at once.
    settings = _inference_settings(path / CALIBRATION_FILE, path)
    model = load_model(run)
    config, metrics = run.config, run.metrics
    _check_model(model, run.model_path)
    on_test = metrics.get("validation") == "test"
    info = {
        "architecture": config.get("recipe", {}).get("model", model.name),
        "parameters": model.count_params(),
        "test_accuracy": metrics.get("validation_accuracy") if on_test else None,
        "source": str(path),
    }
    return Classifier(name=path.name, model=model, info=info, **settings)


def _read_optional_json(path: Path) -> dict:
    """A JSON object that describes a model, or {} when there is none or it cannot be read (a pipe, a device or a
    huge file is never read: `read_bounded`)."""
    from digits.training.file_access import read_bounded

    try:
        content = json.loads(read_bounded(path))
    except (OSError, ValueError, RecursionError):
        return {}
    return content if isinstance(content, dict) else {}


def _load_keras_file(path: Path):
    from digits.training.runs import load_keras_file

    model = load_keras_file(path, compile=False)
    _check_model(model, path)
    return model


def _check_model(model, path: Path) -> None:
    """Refuse models that do not read 28×28 digits into 10 classes, before they give odd answers."""
    try:
        input_shape = tuple(model.input_shape[1:])
        output_shape = tuple(model.output_shape[1:])
    except (AttributeError, ValueError):
        return
    if input_shape not in ((IMAGE_SIDE, IMAGE_SIDE, 1), (IMAGE_SIDE, IMAGE_SIDE)) or output_shape != (CLASSES,):
        raise DigitsError(
            f"The model in {path} takes {input_shape} and gives {output_shape}; digits needs a model from "
            "28×28 images to 10 classes."
        )
