"""Classify prepared 28×28 digits with the shipped model, a run's model, a .keras or an exported .onnx file.

`load_classifier()` loads once (the shipped model on ONNX Runtime when it is installed, without TensorFlow);
`Classifier.predict` takes uint8 (N, 28, 28) arrays from `digits.images` and returns (N, 10) probabilities
through `digits.inference.probabilities`, rescaled by the model's temperature; `Classifier.verdict` says
whether they look like a digit at all. `predict_files` is what `digits predict` runs: every file gets a
result, and a file that cannot be read gets its error instead of stopping the others.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digits.data import CLASSES, IMAGE_SIDE
from digits.detector import DETECTOR_FILE, DigitDetector, load_detector
from digits.errors import DigitsError
from digits.images import ImageError, load_image, prepare_image
from digits.inference import CALIBRATION_FILE, OnnxModel, probabilities, read, with_temperature

PRETRAINED_DIR = Path(__file__).with_name("pretrained")
PRETRAINED_MODEL = PRETRAINED_DIR / "model.keras"
# The shipped model is a run folder of `digits train pretrained`; `digits evaluate` measured its test accuracy.
PRETRAINED_EVALUATION = PRETRAINED_DIR / "evaluation" / "evaluation.json"
# The shipped model exported by `digits export src/digits/pretrained/model.keras --format onnx`, and its sidecar.
PRETRAINED_ONNX = PRETRAINED_DIR / "model.onnx"
PRETRAINED_ONNX_INFO = PRETRAINED_DIR / "model.onnx.json"
PRETRAINED_CALIBRATION = PRETRAINED_DIR / CALIBRATION_FILE


# The verdicts `Classifier.verdict` gives, in the JSON of `digits predict` and of the API.
DIGIT, NOT_A_DIGIT = "digit", "not a digit"


@dataclass
class Classifier:
    """A loaded model and what is known about it (architecture, parameters, test_accuracy, source).

    `model` is a keras.Model or a `digits.inference.OnnxModel`; `predict` answers the same for both. `read`
    adds the not-a-digit detector's digit score when the model has one (`digits.detector`).
    """

    name: str
    model: object  # Typed loosely so that importing this module imports neither Keras nor ONNX Runtime.
    info: dict = field(default_factory=dict)
    temperature: float = 1.0  # Divides the logits; fitted on the holdout by `digits evaluate --calibrate`.
    # When a picture is called no digit: {"score": "digit_score" or "max_probability", "threshold": ...,
    # "max_probability_threshold": ... (used where the digit score is not available)}.
    not_a_digit: dict | None = None
    detector: DigitDetector | None = None  # For a Keras model; an exported ONNX model carries its own.
    _reading_model: object = field(default=None, repr=False)

    @property
    def runtime(self) -> str:
        return "onnxruntime" if isinstance(self.model, OnnxModel) else "keras"

    @property
    def reading_model(self):
        """The model `read` calls: the Keras model joined to its detector (built once), or the model itself."""
        if self.detector is None or isinstance(self.model, OnnxModel):
            return self.model
        if self._reading_model is None:
            from digits.detector import with_digit_score

            self._reading_model = with_digit_score(self.model, self.detector)
        return self._reading_model

    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, 28, 28) MNIST-style images → float32 (N, 10) class probabilities (calibrated)."""
        return with_temperature(probabilities(self.model, images), self.temperature)

    def read(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 (N, 28, 28) images → (N, 10) calibrated probabilities and (N,) digit scores (None without a
        detector)."""
        model_probabilities, digit_scores = read(self.reading_model, images)
        return with_temperature(model_probabilities, self.temperature), digit_scores

    def verdict(self, probabilities: np.ndarray, digit_score: float | None = None) -> str:
        """DIGIT, or NOT_A_DIGIT when the digit score (or, without one, the best digit's probability) is under
        the model's measured threshold (benchmarks/not_a_digit.py); always DIGIT for a model without one."""
        settings = self.not_a_digit
        if settings is None:
            return DIGIT
        if settings.get("score") == "digit_score":
            if digit_score is not None:
                return NOT_A_DIGIT if digit_score < settings["threshold"] else DIGIT
            threshold = settings.get("max_probability_threshold")
        else:
            threshold = settings["threshold"]
        if threshold is None or float(np.max(probabilities)) >= threshold:
            return DIGIT
        return NOT_A_DIGIT

    def verdicts(self, probabilities: np.ndarray, digit_scores: np.ndarray | None) -> list[str]:
        """`verdict` for each row of (N, 10) probabilities and (N,) digit scores."""
        scores = [None] * len(probabilities) if digit_scores is None else [float(score) for score in digit_scores]
        return [self.verdict(row, score) for row, score in zip(probabilities, scores, strict=True)]


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
            settings = _inference_settings(_read_optional_json(PRETRAINED_CALIBRATION))  # no detector: ONNX has it
            classifier.temperature, classifier.not_a_digit = settings["temperature"], settings["not_a_digit"]
        return classifier
    if not PRETRAINED_MODEL.is_file():
        raise DigitsError(
            f"The shipped model {PRETRAINED_MODEL} is missing; reinstall digits or pass --model RUN|FILE.keras."
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
    calibration = _read_optional_json(PRETRAINED_CALIBRATION)
    return Classifier(name="pretrained", model=model, info=info, **_inference_settings(calibration, PRETRAINED_DIR))


def _pretrained_description() -> dict:
    """The shipped run's architecture, measured test accuracy and the command that trains it again."""
    config = _read_optional_json(PRETRAINED_DIR / "config.json")
    evaluation = _read_optional_json(PRETRAINED_EVALUATION).get("evaluation", {})
    recipe = config.get("recipe") if isinstance(config.get("recipe"), dict) else {}
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
    return Classifier(name=name, model=OnnxModel(path, threads=threads), info=info, **_inference_settings(sidecar))


def _inference_settings(settings: dict, folder: Path | None = None) -> dict:
    """The temperature, not-a-digit settings and detector recorded in a sidecar or in a folder's calibration.json,
    checked. The detector is read from `folder` (a run or the shipped model); an ONNX file carries its own."""
    temperature = settings.get("temperature") or 1.0
    not_a_digit = settings.get("not_a_digit")
    if not isinstance(temperature, (int, float)) or temperature <= 0:
        temperature = 1.0
    if not (isinstance(not_a_digit, dict) and isinstance(not_a_digit.get("threshold"), (int, float))):
        not_a_digit = None
    detector = None
    if folder is not None and not_a_digit is not None and not_a_digit.get("score") == "digit_score":
        detector = load_detector(folder / DETECTOR_FILE)
    return {"temperature": float(temperature), "not_a_digit": not_a_digit, "detector": detector}


def _load_run(path: Path) -> Classifier:
    try:
        from digits.runs import load_model, load_run
    except ImportError:  # The run-folder reader is optional here; without it a run is read directly.
        load_run = None
    if load_run is not None:
        run = load_run(path)
        model = load_model(run)
        config, metrics = run.config, run.metrics
        _check_model(model, run.model_path)
    else:
        model_path = path / "model.keras"
        if not model_path.is_file():
            raise DigitsError(f"{path} holds no model.keras; give a run folder written by `digits train`.")
        model = _load_keras_file(model_path)
        config, metrics = _read_optional_json(path / "config.json"), _read_optional_json(path / "metrics.json")
    on_test = metrics.get("validation") == "test"
    info = {
        "architecture": config.get("recipe", {}).get("model", model.name),
        "parameters": model.count_params(),
        "test_accuracy": metrics.get("validation_accuracy") if on_test else None,
        "source": str(path),
    }
    calibration = _read_optional_json(path / CALIBRATION_FILE)
    return Classifier(name=path.name, model=model, info=info, **_inference_settings(calibration, path))


def _read_optional_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _load_keras_file(path: Path):
    from digits.runs import load_keras_file

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


# --- predicting files ---------------------------------------------------------------------------------


@dataclass
class FileResult:
    """One file's answer: the prepared 28×28 view and its probabilities, or the error that stopped it."""

    path: str
    view: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    error: str | None = None
    verdict: str | None = None  # DIGIT or NOT_A_DIGIT
    original: object = None  # A small RGB copy of the picture (PIL), kept for --show.

    @property
    def digit(self) -> int:
        return int(np.argmax(self.probabilities))

    def top(self, count: int = 3) -> list[tuple[int, float]]:
        order = np.argsort(self.probabilities)[::-1][:count]
        return [(int(digit), float(self.probabilities[digit])) for digit in order]

    def as_dict(self, top: int = 3) -> dict:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {
            "path": self.path,
            "digit": self.digit,
            "verdict": self.verdict,
            "probability": round(float(self.probabilities[self.digit]), 6),
            "top": [{"digit": digit, "probability": round(probability, 6)} for digit, probability in self.top(top)],
            "probabilities": [round(float(value), 6) for value in self.probabilities],
        }


def find_image_files(paths: list[str | Path]) -> list[Path]:
    """Files to read: each file as given, and each directory walked in sorted order, skipping hidden names."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(
                sorted(
                    candidate
                    for candidate in path.rglob("*")
                    if candidate.is_file()
                    and not any(part.startswith(".") for part in candidate.relative_to(path).parts)
                )
            )
        else:
            found.append(path)  # A missing path still gets its own line ("does not exist").
    return found


def predict_files(classifier: Classifier, paths: list[Path], *, keep_originals: bool = False) -> list[FileResult]:
    """Prepare every file, classify the readable ones in one batch; errors stay per file."""
    results = [FileResult(path=str(path)) for path in paths]
    for result in results:
        try:
            image = load_image(result.path)
            result.view = prepare_image(image, name=result.path)
            if keep_originals:
                result.original = _display_copy(image)
        except ImageError as error:
            result.error = str(error)
    readable = [result for result in results if result.error is None]
    if readable:
        probabilities, digit_scores = classifier.read(np.stack([result.view for result in readable]))
        verdicts = classifier.verdicts(probabilities, digit_scores)
        for result, row, verdict in zip(readable, probabilities, verdicts, strict=True):
            result.probabilities, result.verdict = row, verdict
    return results


def result_line(result: FileResult, top: int = 3) -> str:
    """One line for `digits predict`: the path, the digit, its probability and the likeliest digits.

    Control characters in a file name (a newline) are escaped, so a name cannot forge another line.
    """
    if result.error is not None:
        return one_line(f"{result.path}: error: {result.error}")
    likeliest = ", ".join(f"{digit} {probability:.1%}" for digit, probability in result.top(top))
    answer = f"{result.digit} ({result.probabilities[result.digit]:.1%})"
    if result.verdict == NOT_A_DIGIT:
        answer = f"does not look like a digit; best guess {answer}"
    return one_line(f"{result.path}: {answer}  top {top}: {likeliest}")


def one_line(text: str) -> str:
    """`text` with every unprintable character (newline, carriage return, escape) written as a Python escape."""
    return "".join(character if character.isprintable() else repr(character)[1:-1] for character in text)


def results_document(classifier: Classifier, results: list[FileResult], top: int = 3) -> dict:
    """The `--json` document: the model, then one entry per file (a prediction or an error)."""
    return {
        "model": {"name": classifier.name, **_without(classifier.info, "command")},
        "results": [result.as_dict(top) for result in results],
        "failed": sum(result.error is not None for result in results),
    }


def _without(info: dict, key: str) -> dict:
    return {name: value for name, value in info.items() if name != key}


# Each --show picture: the original, at most SHOW_HEIGHT tall, beside the 28×28 view at 10× (nearest).
SHOW_HEIGHT = 280
SHOW_MARGIN = 10


def save_views(results: list[FileResult], folder: str | Path) -> list[Path]:
    """Write, for each read file, a PNG of the original beside the 28×28 view the model saw.

    Each is a new file: a name already taken in the folder (the input picture itself, or anything else)
    gets the next free "-2", "-3"... instead, so no existing file is ever written over.
    """
    from PIL import Image, ImageDraw

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DigitsError(f"Cannot create the --show folder {folder} ({error.strerror}); choose another.") from None
    written = []
    for result in results:
        if result.error is not None or result.original is None:
            continue
        original = result.original
        view = Image.fromarray(result.view).resize((SHOW_HEIGHT, SHOW_HEIGHT), Image.Resampling.NEAREST)
        width = original.width + SHOW_HEIGHT + 3 * SHOW_MARGIN
        sheet = Image.new("RGB", (width, SHOW_HEIGHT + 2 * SHOW_MARGIN + 20), (128, 128, 128))
        sheet.paste(original, (SHOW_MARGIN, SHOW_MARGIN + (SHOW_HEIGHT - original.height) // 2))
        sheet.paste(view.convert("RGB"), (original.width + 2 * SHOW_MARGIN, SHOW_MARGIN))
        caption = f"{result.digit} ({result.probabilities[result.digit]:.1%})   original | 28x28 view the model saw"
        ImageDraw.Draw(sheet).text((SHOW_MARGIN, SHOW_HEIGHT + SHOW_MARGIN + 4), caption, fill=(255, 255, 255))
        name = Path(result.path).stem or "image"
        target, copy = folder / f"{name}.png", 2
        while True:
            try:
                # Created exclusively: an existing file, or a link planted at the name, is never written through.
                descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                break
            except FileExistsError:
                target, copy = folder / f"{name}-{copy}.png", copy + 1
            except OSError as error:
                raise DigitsError(f"Cannot write {target} ({error.strerror}); check the --show folder.") from None
        try:
            with os.fdopen(descriptor, "wb") as output:
                sheet.save(output, "PNG")
        except OSError as error:
            target.unlink(missing_ok=True)
            raise DigitsError(f"Cannot write {target} ({error.strerror}); check the --show folder.") from None
        written.append(target)
    return written


def _display_copy(image):
    """The picture as RGB, at most SHOW_HEIGHT tall (and twice that wide), transparency over mid grey."""
    from PIL import Image

    flat = _flatten_for_display(image)
    scale = min(SHOW_HEIGHT / flat.height, 2 * SHOW_HEIGHT / flat.width)
    size = (max(1, round(flat.width * scale)), max(1, round(flat.height * scale)))
    return flat.resize(size, Image.Resampling.LANCZOS)


def _flatten_for_display(image):
    """The picture as RGB; transparency shown over mid grey so both light and dark ink stay visible."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        backdrop = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
        return Image.alpha_composite(backdrop, rgba).convert("RGB")
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        pixels = np.asarray(image, dtype=np.float32)
        pixels = pixels / max(float(pixels.max()), 1.0) * 255
        return Image.fromarray(pixels.astype(np.uint8)).convert("RGB")
    return image.convert("RGB")

