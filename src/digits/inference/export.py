"""Export a trained model to ONNX, LiteRT (TFLite) or a TensorFlow SavedModel, checked against Keras.

`export_model` writes the file with Keras 3's own exporter (`model.export`), reads it back in its own runtime
(ONNX Runtime, the LiteRT interpreter, `tf.saved_model.load`), classifies the first 1,000 MNIST test images
with it and with Keras, and keeps it only when the two agree: every digit the same and no probability more
than `MAX_DIFFERENCE` apart. Beside it goes a JSON sidecar (`<file>.json`) saying what the model expects and
what it gives, so a program in another language can use it without reading this code.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digits import __version__
from digits.data.mnist import to_model_input
from digits.errors import DigitsError
from digits.inference.classifier import PRETRAINED_MODEL, Classifier, file_sha256, load_classifier
from digits.inference.not_a_digit import DETECTOR_FILE
from digits.inference.runtime import OnnxModel, read
from digits.training.file_access import publish, write_atomically

# The file name ending each format gets by default.
FORMATS = {"onnx": ".onnx", "litert": ".tflite", "saved_model": ""}
# How many MNIST test images the check classifies with both runtimes.
CHECK_IMAGES = 1000
# Float32 kernels of different runtimes differ by rounding, about 1e-6 on these models; more is a real change.
MAX_DIFFERENCE = 1e-4
INPUT_NAME = "images"
PREPROCESSING = ("MNIST-style: light ink on black, the digit fitted in a 20×20 box and centred by mass in 28×28 "
                 "(digits.pictures.prepare.prepare_image), then uint8 / 255 as float32")


@dataclass
class ExportCheck:
    """How the exported model's answers compare with Keras's on the same images."""

    images: int
    max_difference: float  # The largest |Δ probability| over all images and classes.
    agreement: float  # The fraction of images given the same digit.
    max_score_difference: float | None = None  # The largest |Δ digit score|, for a model exported with its detector.

    def passed(self, max_difference: float = MAX_DIFFERENCE) -> bool:
        scores_agree = self.max_score_difference is None or self.max_score_difference <= max_difference
        return self.agreement == 1.0 and self.max_difference <= max_difference and scores_agree

    def line(self) -> str:
        scores = ("" if self.max_score_difference is None
                  else f", max |Δ digit score| = {self.max_score_difference:.2e}")
        return (f"checked on {self.images:,} MNIST test images: max |Δp| = {self.max_difference:.2e}{scores}, "
                f"digits agree on {self.agreement:.2%}")


@dataclass
class ExportResult:
    path: Path
    sidecar: Path
    check: ExportCheck


def compare_probabilities(reference: np.ndarray, exported: np.ndarray) -> ExportCheck:
    """Compare two (N, 10) probability arrays of the same images."""
    reference, exported = np.asarray(reference), np.asarray(exported)
    if reference.shape != exported.shape:
        raise DigitsError(f"The exported model gave {exported.shape} probabilities where Keras gave "
                          f"{reference.shape}; the export is broken.")
    return ExportCheck(images=len(reference), max_difference=float(np.max(np.abs(reference - exported))),
                       agreement=float(np.mean(reference.argmax(axis=1) == exported.argmax(axis=1))))


def default_path(spec: str | Path, format: str) -> Path:
    """`<run>/model.onnx` for a run folder, `FILE.onnx` beside a .keras file (`.tflite`, or a folder for a
    SavedModel)."""
    path = Path(spec)
    stem = path / "model" if path.is_dir() else path.with_suffix("")
    return stem.with_name(stem.name + ("-saved_model" if format == "saved_model" else FORMATS[format]))


def sidecar_path(path: str | Path) -> Path:
    """Where the JSON description of an exported model lives: its full name plus `.json`."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def export_model(spec: str | Path, format: str = "onnx", out: str | Path | None = None, *, test_images=None,
                 max_difference: float = MAX_DIFFERENCE, command: str | None = None) -> ExportResult:
    """Export the model of a run folder or .keras file (`spec`) to `out` and check it.

    test_images: uint8 (N, 28, 28) images for the check (default: the first 1,000 MNIST test images).
    Refuses to replace an existing file; an export that disagrees with Keras is deleted and raises DigitsError.
    """
    if format not in FORMATS:
        raise DigitsError(f"Unknown format {format!r}; choose one of {', '.join(FORMATS)}.")
    _check_source(spec)  # Before the output: a wrong source is the first thing to hear about.
    out = Path(out) if out is not None else default_path(spec, format)
    if format == "litert" and out.suffix != ".tflite":
        raise DigitsError(f"A LiteRT model's file name ends in .tflite; choose an `out` such as {out.stem}.tflite.")
    for taken in (out, sidecar_path(out)):
        if os.path.lexists(taken):  # A link, even one to nothing, counts: digits never writes through one.
            raise DigitsError(f"{taken} already exists; remove it or choose another output path.")
    if not out.parent.is_dir():
        raise DigitsError(f"The folder {out.parent} does not exist; create it or choose another output path.")
    classifier = _load_source(spec)
    if test_images is None:
        from digits.data.mnist import load_mnist

        test_images = load_mnist().test_images[:CHECK_IMAGES]
    # The reference is Keras running what is exported: for a mixed-precision run, its weights in float32. An ONNX
    # export carries the not-a-digit detector as a second output; the other formats hold the classifier alone.
    model = inference_form(classifier.model)
    detector = classifier.detector if format == "onnx" else None
    with_detector = detector is not None
    if detector is not None:
        from digits.inference.not_a_digit_graph import with_digit_score

        model = with_digit_score(model, detector)
    reference, reference_scores = read(model, test_images)

    # Written inside a new private folder beside `out` (made exclusively, mode 700), so nothing planted at a
    # predictable name is written through; the file then moves to `out` only if nothing, not even a link, is there.
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as folder:
        partial = Path(folder) / out.name  # Keras checks the ending of the name.
        _write(model, partial, format)
        try:
            exported = run_export(partial, format, test_images)
        except DigitsError:
            raise
        except Exception as error:  # noqa: BLE001  Each runtime has its own errors; all mean the file is unusable.
            raise DigitsError(f"The {format} export cannot be run in its own runtime ({type(error).__name__}), "
                              "so nothing was written.") from None
        check = compare_probabilities(reference, exported[0])
        if reference_scores is not None:
            if exported[1] is None:
                raise DigitsError(f"The {format} export lost the digit score output, so nothing was written.")
            check.max_score_difference = float(np.max(np.abs(reference_scores - exported[1])))
        if not check.passed(max_difference):
            raise DigitsError(f"The {format} export does not match Keras ({check.line()}; allowed: "
                              f"{max_difference:.0e} and 100 %), so nothing was written.")
        sidecar = sidecar_path(out)
        description = describe(classifier, _keras_file(spec), format, out, check, command, with_detector)
        if partial.is_dir():
            partial.chmod(0o755)  # A SavedModel folder: readable by others, as any export.
        try:
            write_atomically(sidecar, json.dumps(description, indent=2, ensure_ascii=False) + "\n", exclusive=True)
            try:
                publish(partial, out, exclusive=True)
            except BaseException:
                sidecar.unlink()
                raise
        except FileExistsError as error:
            raise DigitsError(f"{error.filename} appeared while exporting; remove it or choose another output "
                              "path.") from None
    return ExportResult(path=out, sidecar=sidecar, check=check)


def _check_source(spec: str | Path) -> None:
    path = Path(spec)
    if not path.exists():
        raise DigitsError(f"There is no model at {path}; give a run folder written by `digits train` or a .keras file.")
    if path.suffix in (".onnx", ".tflite"):
        raise DigitsError(f"{path} is already an exported model; export from a run folder or a .keras file.")
    if path.is_file() and path.suffix != ".keras":
        raise DigitsError(f"{path} is not a .keras model file; give a run folder written by `digits train` or a "
                          ".keras file.")


def _load_source(spec: str | Path) -> Classifier:
    path = Path(spec)
    # The shipped model's facts (test accuracy, how it was trained) live beside it, not in the .keras file.
    if path.is_file() and path.resolve() == PRETRAINED_MODEL.resolve():
        return load_classifier(None, prefer_onnx=False)
    return load_classifier(path)


def _keras_file(spec: str | Path) -> Path:
    path = Path(spec)
    return path / "model.keras" if path.is_dir() else path


def inference_form(model):
    """The model as it runs at inference: without its training-only augmentation layers, in float32.

    Augmentation layers pass images through unchanged at inference, but RandomWarp's graph makes tf2onnx write
    a file ONNX Runtime rejects. A model trained in mixed bfloat16 becomes float32 (the same weights), since
    the exporters and runtimes read float32 graphs. Only a Sequential model is rebuilt; others go as they are.
    """
    import keras

    layers = [layer for layer in model.layers if not type(layer).__name__.startswith("Random")]
    in_float32 = all(layer.dtype_policy.name == "float32" for layer in layers)
    if not isinstance(model, keras.Sequential) or (len(layers) == len(model.layers) and in_float32):
        return model
    copies = [type(layer).from_config({**layer.get_config(), "dtype": "float32"}) for layer in layers]
    rebuilt = keras.Sequential([keras.Input(shape=(28, 28, 1)), *copies], name=model.name)
    for copy, layer in zip(copies, layers, strict=True):
        copy.set_weights(layer.get_weights())
    return rebuilt


def _write(model, path: Path, format: str) -> None:
    import keras

    # A model loaded from disk was never called, so Keras cannot infer its input; name it instead. Layers
    # that only act in training (augmentation, dropout) are exported in their inference form.
    signature = [keras.InputSpec(shape=(None, 28, 28, 1), dtype="float32", name=INPUT_NAME)]
    keras_format = "tf_saved_model" if format == "saved_model" else format
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf2onnx's and the converter's deprecation notices.
            model.export(str(path), format=keras_format, verbose=False, input_signature=signature)
    except Exception as error:  # noqa: BLE001  The converters raise many types; the format is what matters.
        raise DigitsError(f"Keras could not export this model to {format} ({type(error).__name__}: "
                          f"{str(error).splitlines()[0] if str(error) else ''}).") from None


def run_export(path: str | Path, format: str, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Classify uint8 (N, 28, 28) images with an exported model in its own runtime → (N, 10) probabilities, and
    (N,) digit scores for an ONNX file exported with its detector (else None)."""
    if format == "onnx":
        return read(OnnxModel(path), images)
    model_input = to_model_input(images)
    if format == "saved_model":
        import tensorflow as tf

        saved_model = tf.saved_model.load(str(path))  # Kept in a name: its variables live as long as it does.
        return np.asarray(saved_model.serve(model_input)), None
    interpreter = _litert_interpreter(path)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, model_input.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, model_input)
    interpreter.invoke()
    return np.array(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])), None


def _litert_interpreter(path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # The standalone LiteRT runtime is optional; TensorFlow still carries its interpreter.
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TensorFlow's "use ai_edge_litert" notice.
        return Interpreter(model_path=str(path))


def describe(classifier: Classifier, keras_file: Path, format: str, out: Path, check: ExportCheck,
             command: str | None, with_detector: bool = False) -> dict:
    """The sidecar: what the exported model takes, gives, and where it came from."""
    import keras

    info = classifier.info
    outputs: dict[str, object] = {"shape": [None, 10], "meaning": "softmax probabilities of the digits 0..9"}
    if with_detector:
        outputs = {"probabilities": outputs, "digit_score": {
            "shape": [None, 1], "meaning": "how sure the not-a-digit detector is that the picture is a digit "
                                           "(0..1); under not_a_digit.threshold the answer is 'not a digit'"}}
    detector_file = keras_file.with_name(DETECTOR_FILE)
    return {
        "format": format,
        "file": out.name,
        "input": {"name": INPUT_NAME, "shape": [None, 28, 28, 1], "dtype": "float32", "layout": "NHWC",
                  "range": [0.0, 1.0]},
        "preprocessing": PREPROCESSING,
        "output": outputs,
        "class_names": [str(digit) for digit in range(10)],
        "name": classifier.name,
        "architecture": info.get("architecture"),
        "parameters": info.get("parameters"),
        "test_accuracy": info.get("test_accuracy"),
        "temperature": classifier.temperature,
        "not_a_digit": classifier.not_a_digit if with_detector else _probability_rule(classifier.not_a_digit),
        "source": str(info.get("source")),
        # Lets a reader tell whether the .keras file changed since (the shipped model falls back to it then).
        "source_sha256": file_sha256(keras_file),
        "detector_sha256": file_sha256(detector_file) if with_detector and detector_file.is_file() else None,
        "check": {"images": check.images, "max_abs_difference": check.max_difference, "agreement": check.agreement,
                  "against": f"Keras {keras.__version__} ({keras.backend.backend()})"},
        "digits_version": __version__,
        "command": command,
    }


def _probability_rule(not_a_digit: dict | None) -> dict | None:
    """The not-a-digit rule of a file without the digit score: the largest probability and its own threshold."""
    if not_a_digit is None or not_a_digit.get("score") != "digit_score":
        return not_a_digit
    threshold = not_a_digit.get("max_probability_threshold")
    return None if threshold is None else {"score": "max_probability", "threshold": threshold}
