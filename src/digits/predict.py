"""Classify prepared 28×28 digits with the shipped model, a run's model or any .keras file.

`load_classifier()` loads once; `Classifier.predict` takes uint8 (N, 28, 28) arrays from
`digits.images` and returns (N, 10) probabilities. `predict_files` is what `digits predict` runs: every
file gets a result, and a file that cannot be read gets its error instead of stopping the others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digits.data import CLASSES, IMAGE_SIDE, to_model_input
from digits.errors import DigitsError
from digits.images import ImageError, load_image, prepare_image

PRETRAINED_DIR = Path(__file__).with_name("pretrained")
PRETRAINED_MODEL = PRETRAINED_DIR / "model.keras"
# The shipped model is a run folder of `digits train pretrained`; `digits evaluate` measured its test accuracy.
PRETRAINED_EVALUATION = PRETRAINED_DIR / "evaluation" / "evaluation.json"

# Above this many images, Keras's batched `predict` beats calling the model directly.
DIRECT_CALL_LIMIT = 256


@dataclass
class Classifier:
    """A loaded model and what is known about it (architecture, parameters, test_accuracy, source)."""

    name: str
    model: object  # keras.Model; typed loosely so that importing this module does not import Keras.
    info: dict = field(default_factory=dict)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, 28, 28) MNIST-style images → float (N, 10) class probabilities."""
        model_input = to_model_input(images)  # Checked, scaled to [0, 1], with the channel axis.
        if len(model_input) == 0:
            return np.zeros((0, CLASSES), np.float32)
        if len(model_input) <= DIRECT_CALL_LIMIT:
            probabilities = self.model(model_input, training=False)
        else:
            probabilities = self.model.predict(model_input, batch_size=DIRECT_CALL_LIMIT, verbose=0)
        return np.asarray(probabilities, dtype=np.float32)


def load_classifier(spec: str | Path | None = None) -> Classifier:
    """The shipped model (None), a run folder written by `digits train`, or a .keras file."""
    if spec is None:
        return _load_pretrained()
    path = Path(spec)
    if not path.exists():
        raise DigitsError(f"There is no model at {path}; give a run folder or a .keras file, or leave --model out.")
    if path.is_dir():
        return _load_run(path)
    if path.suffix != ".keras":
        raise DigitsError(f"{path} is not a .keras model file; give a run folder or a .keras file.")
    model = _load_keras_file(path)
    info = {"architecture": model.name, "parameters": model.count_params(), "test_accuracy": None, "source": str(path)}
    return Classifier(name=path.stem if path.stem != "model" else path.parent.name or "model", model=model, info=info)


def _load_pretrained() -> Classifier:
    if not PRETRAINED_MODEL.is_file():
        raise DigitsError(
            f"The shipped model {PRETRAINED_MODEL} is missing; reinstall digits or pass --model RUN|FILE.keras."
        )
    config = _read_optional_json(PRETRAINED_DIR / "config.json")
    evaluation = _read_optional_json(PRETRAINED_EVALUATION).get("evaluation", {})
    model = _load_keras_file(PRETRAINED_MODEL)
    info = {
        "architecture": config.get("recipe", {}).get("model", model.name),
        "parameters": model.count_params(),
        "test_accuracy": evaluation.get("accuracy"),
        "source": "shipped with digits (src/digits/pretrained/model.keras)",
        "command": f"digits train {config['preset']}" if "preset" in config else None,
    }
    return Classifier(name="pretrained", model=model, info=info)


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
    return Classifier(name=path.name, model=model, info=info)


def _read_optional_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _load_keras_file(path: Path):
    import keras

    import digits.augment  # noqa: F401  Registers the augmentation layer a model trained by digits holds.

    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a damaged or foreign file; all mean the same.
        raise DigitsError(
            f"Cannot load a Keras model from {path} ({type(error).__name__}); give a .keras file saved by Keras 3."
        ) from None
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
        probabilities = classifier.predict(np.stack([result.view for result in readable]))
        for result, row in zip(readable, probabilities, strict=True):
            result.probabilities = row
    return results


def result_line(result: FileResult, top: int = 3) -> str:
    """One line for `digits predict`: the path, the digit, its probability and the likeliest digits."""
    if result.error is not None:
        return f"{result.path}: error: {result.error}"
    likeliest = ", ".join(f"{digit} {probability:.1%}" for digit, probability in result.top(top))
    return f"{result.path}: {result.digit} ({result.probabilities[result.digit]:.1%})  top {top}: {likeliest}"


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
    """Write, for each read file, a PNG of the original beside the 28×28 view the model saw."""
    from PIL import Image, ImageDraw

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DigitsError(f"Cannot create the --show folder {folder} ({error.strerror}); choose another.") from None
    written, used = [], set()
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
        while target in used:  # Files with the same name from different folders each get their own view.
            target, copy = folder / f"{name}-{copy}.png", copy + 1
        used.add(target)
        try:
            sheet.save(target)
        except OSError as error:
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

