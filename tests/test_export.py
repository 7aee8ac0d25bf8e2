"""`digits export` and the TensorFlow-free inference path: exports that match Keras, and a server without TensorFlow."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from digits.data.mnist import load_mnist
from digits.errors import DigitsError
from digits.inference.classifier import PRETRAINED_MODEL, PRETRAINED_ONNX, load_classifier
from digits.inference.export import compare_probabilities, export_model, inference_form, run_export
from digits.inference.runtime import OnnxModel, probabilities


def digits(*arguments, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digits", *map(str, arguments)], capture_output=True, text=True,
                          check=False, timeout=timeout)


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


@pytest.fixture(scope="module")
def keras_classifier():
    return load_classifier(None, prefer_onnx=False)  # The shipped model on Keras.


# --- exports of the shipped model -----------------------------------------------------------------


@pytest.mark.parametrize("format, name", [("onnx", "model.onnx"), ("litert", "model.tflite")])
def test_the_shipped_model_exports_and_reads_back_the_same(tmp_path, mnist, keras_classifier, format, name):
    out = tmp_path / name
    result = export_model(PRETRAINED_MODEL, format, out, test_images=mnist.test_images[:200])
    assert result.path == out and out.is_file() and not list(tmp_path.glob("*.partial*"))
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["format"] == format and sidecar["class_names"] == [str(digit) for digit in range(10)]
    assert sidecar["input"]["shape"] == [None, 28, 28, 1] and sidecar["check"]["agreement"] == 1.0
    assert sidecar["test_accuracy"] == keras_classifier.info["test_accuracy"]
    # Only the ONNX file gives the digit score; a LiteRT file's reader is told to use the largest probability.
    expected_rule = "digit_score" if format == "onnx" else "max_probability"
    assert sidecar["not_a_digit"]["score"] == expected_rule and 0 < sidecar["not_a_digit"]["threshold"] < 1
    exported, _ = run_export(out, format, mnist.test_images[200:400])  # Images the check did not see.
    keras_probabilities = keras_classifier.classify(mnist.test_images[200:400]).probabilities
    np.testing.assert_allclose(exported, keras_probabilities, atol=1e-4)


def test_an_export_that_does_not_match_keras_is_refused_and_leaves_no_file(tmp_path, mnist):
    # Runtimes differ from Keras by float rounding (about 1e-7); allowing no difference at all must refuse.
    out = tmp_path / "model.onnx"
    with pytest.raises(DigitsError, match="does not match Keras.*nothing was written"):
        export_model(PRETRAINED_MODEL, "onnx", out, test_images=mnist.test_images[:100], max_difference=0.0)
    assert list(tmp_path.iterdir()) == []


def test_a_disagreeing_digit_fails_the_check_whatever_the_difference():
    reference = np.array([[0.6, 0.4], [0.1, 0.9]])
    check = compare_probabilities(reference, np.array([[0.4, 0.6], [0.1, 0.9]]))
    assert check.agreement == 0.5 and not check.passed(max_difference=1.0)
    assert compare_probabilities(reference, reference + 1e-6).passed()


def test_export_never_replaces_a_file_and_names_bad_sources(tmp_path):
    taken = tmp_path / "model.onnx"
    taken.write_text("the user's own file")
    result = digits("export", PRETRAINED_MODEL, "--out", taken)
    assert result.returncode == 1 and "already exists" in result.stderr and "Traceback" not in result.stderr
    assert taken.read_text() == "the user's own file"
    result = digits("export", PRETRAINED_ONNX, "--out", tmp_path / "again.onnx")
    assert result.returncode == 1 and "already an exported model" in result.stderr
    # Without --out the source is named first, never an output path the user did not give.
    result = digits("export", PRETRAINED_ONNX)
    assert result.returncode == 1 and "already an exported model" in result.stderr
    result = digits("export", tmp_path / "missing" / "model.keras")
    assert result.returncode == 1 and "There is no model at" in result.stderr


@pytest.mark.parametrize("planted", ["a.onnx", "a.onnx.json"])
def test_export_never_writes_through_a_link_planted_at_an_output_name(tmp_path, planted):
    # Issue 24: a dangling link at the output or its sidecar made export create a file outside the folder.
    folder, outside = tmp_path / "d", tmp_path / "outside"
    folder.mkdir()
    (folder / planted).symlink_to(outside)
    with pytest.raises(DigitsError, match=rf"{folder / planted} already exists; remove it"):
        export_model(PRETRAINED_MODEL, "onnx", folder / "a.onnx")
    assert not outside.exists()


def test_export_writes_through_no_link_at_the_names_it_used_for_unfinished_files(tmp_path, mnist):
    # The unfinished model was written at d/a.partial.onnx: a link planted there sent the export elsewhere.
    folder, outside = tmp_path / "d", tmp_path / "outside"
    folder.mkdir()
    for name in ("a.partial.onnx", "a.onnx.partial", "a.onnx.json.partial"):
        (folder / name).symlink_to(outside / name)
    result = export_model(PRETRAINED_MODEL, "onnx", folder / "a.onnx", test_images=mnist.test_images[:100])
    assert result.path.is_file() and not result.path.is_symlink() and not outside.exists()
    assert sorted(path.name for path in folder.iterdir()) == [
        "a.onnx", "a.onnx.json", "a.onnx.json.partial", "a.onnx.partial", "a.partial.onnx"]


def test_the_one_atomic_write_refuses_an_existing_name_when_exclusive_and_never_follows_a_link(tmp_path):
    from digits.training.file_access import write_atomically

    outside = tmp_path / "outside.json"
    link = tmp_path / "metrics.json"
    link.symlink_to(outside)
    with pytest.raises(FileExistsError):
        write_atomically(link, "{}", exclusive=True)
    assert not outside.exists() and link.is_symlink()
    (tmp_path / "metrics.json.partial").symlink_to(outside)  # the name the helper once wrote through
    write_atomically(link, '{"status": "complete"}')  # Replaces the link itself; the link's target stays untouched.
    assert not outside.exists() and not link.is_symlink() and link.read_text() == '{"status": "complete"}'
    assert sorted(path.name for path in tmp_path.iterdir()) == ["metrics.json", "metrics.json.partial"]


def test_the_shipped_onnx_model_agrees_with_keras_on_the_whole_test_set(mnist, keras_classifier):
    onnx_probabilities = probabilities(OnnxModel(PRETRAINED_ONNX), mnist.test_images)
    keras_probabilities = keras_classifier.classify(mnist.test_images).probabilities
    assert np.array_equal(onnx_probabilities.argmax(axis=1), keras_probabilities.argmax(axis=1))
    np.testing.assert_allclose(onnx_probabilities, keras_probabilities, atol=1e-4)


# --- a freshly trained run --------------------------------------------------------------------------


@pytest.mark.slow
def test_a_freshly_trained_run_with_augmentation_exports_to_onnx_and_litert(tmp_path, mnist):
    result = digits("train", "quick-cnn", "--runs-dir", tmp_path, "--epochs", "1", "--train-limit", "1000",
                    "--test-limit", "200", "--augment-rotation", "10", "--augment-elastic", "1", timeout=600)
    assert result.returncode == 0, result.stderr
    (run,) = [path for path in tmp_path.iterdir() if path.is_dir()]
    for format, name in (("onnx", "model.onnx"), ("litert", "model.tflite")):
        exported = digits("export", run, "--format", format)
        assert exported.returncode == 0, exported.stderr
        assert re.search(r"max \|Δp\| = \S+, digits agree on 100\.00%", exported.stdout)
        assert (run / name).is_file() and (run / f"{name}.json").is_file()
    # What Keras computes with the run's weights in float32 (a quick run may train in mixed bfloat16).
    keras_probabilities = probabilities(inference_form(load_classifier(run).model), mnist.test_images[:100])
    onnx_probabilities = load_classifier(run / "model.onnx").classify(mnist.test_images[:100]).probabilities
    np.testing.assert_allclose(onnx_probabilities, keras_probabilities, atol=1e-4)


# --- without TensorFlow -----------------------------------------------------------------------------


def test_predicting_with_onnx_never_imports_tensorflow(tmp_path, digit_png):
    picture = tmp_path / "seven.png"
    picture.write_bytes(digit_png(7))
    program = (
        "import sys, json\n"
        "import digits\n"
        "from digits.inference.classifier import load_classifier\n"
        "from digits.inference.files import predict_files\n"
        f"classifier = load_classifier({str(PRETRAINED_ONNX)!r})\n"
        f"(result,) = predict_files(classifier, [{str(picture)!r}])\n"
        f"(through_the_api,) = digits.predict([{str(picture)!r}])\n"
        "assert through_the_api.digit == result.digit\n"
        "shipped = load_classifier()\n"
        "print(json.dumps({'digit': result.digit, 'runtime': shipped.runtime,\n"
        "                  'loaded': sorted({'tensorflow', 'keras'} & set(sys.modules))}))\n"
    )
    answer = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=False, timeout=120)
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout) == {"digit": 7, "runtime": "onnxruntime", "loaded": []}
    cli = digits("predict", "--model", PRETRAINED_ONNX, "--json", picture)
    assert cli.returncode == 0 and json.loads(cli.stdout)["results"][0]["digit"] == 7


@pytest.mark.slow
def test_serve_with_an_onnx_model_answers_without_tensorflow(digit_png):
    server = subprocess.Popen([sys.executable, "-m", "digits", "serve", "--model", str(PRETRAINED_ONNX), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first_line = server.stdout.readline()
        address = re.search(r"http://127\.0\.0\.1:\d+/", first_line)
        assert address and "onnxruntime" in first_line, first_line
        answer = httpx.post(address.group() + "predict", content=digit_png(1), timeout=30).json()
        # The server's own memory map: TensorFlow's shared libraries are there once anything imports it.
        libraries = Path(f"/proc/{server.pid}/maps").read_text()
    finally:
        server.send_signal(signal.SIGINT)  # Ctrl+C, so the server also stops its preparation workers.
        try:
            server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()
    assert answer["digit"] == 1 and answer["verdict"] == "digit"
    assert "onnxruntime" in libraries and "tensorflow" not in libraries
