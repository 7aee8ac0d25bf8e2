"""Issue 15: hostile or careless files and folders given to the `digits` commands end in one sentence."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

import hostile_files
from digits.errors import DigitsError
from digits.inference.classifier import PRETRAINED_MODEL, load_classifier


def digits(*arguments: str, timeout: float = 120, **environment) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digits", *arguments], capture_output=True, text=True, check=False,
                          timeout=timeout, env={**os.environ, **environment})


# --- 8. --model must be a regular file -----------------------------------------------------------------


def test_a_model_linked_to_dev_zero_is_refused_at_once(tmp_path):
    link = tmp_path / "zero.keras"
    link.symlink_to("/dev/zero")
    with pytest.raises(DigitsError, match="not a regular file"):
        load_classifier(link)


def test_a_model_that_is_a_named_pipe_is_refused_instead_of_waiting_for_ever(tmp_path):
    pipe = tmp_path / "pipe.keras"
    os.mkfifo(pipe)
    with pytest.raises(DigitsError, match="not a regular file"):
        load_classifier(pipe)
    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / "model.keras")
    (run / "config.json").write_text("{}")
    (run / "metrics.json").write_text('{"status": "complete"}')
    (run / "history.csv").write_text("epoch,loss,accuracy,val_loss,val_accuracy,seconds\n")
    with pytest.raises(DigitsError, match="model.keras"):
        load_classifier(run)


# --- 14. models refused by Keras's safe mode ---------------------------------------------------------------


def rewrite_config(source: Path, target: Path, change) -> Path:
    with zipfile.ZipFile(source) as original:
        files = {name: original.read(name) for name in original.namelist()}
    files["config.json"] = json.dumps(change(json.loads(files["config.json"]))).encode()
    with zipfile.ZipFile(target, "w") as rewritten:
        for name, content in files.items():
            rewritten.writestr(name, content)
    return target


def test_a_model_naming_os_system_is_refused_saying_why(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Where `touch pwned` would leave its file.
    calling_os = rewrite_config(PRETRAINED_MODEL, tmp_path / "evil.keras", lambda config: {
        "module": "os", "class_name": "system", "config": {"command": "touch pwned"}, "registered_name": "system"})
    with pytest.raises(DigitsError, match=r"was refused: it holds a class named 'os\.system'.*safe loading"):
        load_classifier(calling_os)
    assert not (tmp_path / "pwned").exists()


def first_layer_of(config: dict, class_name: str) -> dict:
    return next(layer for layer in config["config"]["layers"] if layer["class_name"] == class_name)


def with_os_system_as_activation(config: dict) -> dict:
    first_layer_of(config, "Dense")["config"]["activation"] = {
        "module": "os", "class_name": "function", "config": "system", "registered_name": "system"}
    return config


def with_os_system_as_a_layer(config: dict) -> dict:
    first_layer_of(config, "Conv2D").update(module="os", class_name="system")
    return config


@pytest.mark.parametrize("change, kind", [(with_os_system_as_activation, "function"),
                                          (with_os_system_as_a_layer, "class")])
def test_os_system_nested_in_a_layer_is_named_as_os_system(tmp_path, monkeypatch, change, kind):
    # Issue 24: Keras's message printed the outer model's module beside the name ('keras.system').
    monkeypatch.chdir(tmp_path)
    evil = rewrite_config(PRETRAINED_MODEL, tmp_path / "evil.keras", change)
    with pytest.raises(DigitsError, match=rf"was refused: it holds a {kind} named 'os\.system' that Keras does not "
                                          "know, which Keras's safe loading does not allow"):
        load_classifier(evil)
    assert not (tmp_path / "pwned").exists()


def test_a_model_with_a_lambda_layer_is_refused_saying_it_holds_code(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Lambda(lambda images: images * 2),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(DigitsError, match=r"was refused: it holds Python code"):
        load_classifier(tmp_path / "lambda.keras")


# --- 5, 9. predict: one bad file, names that forge lines, --show never overwrites --------------------------


def test_predict_reports_a_nan_picture_and_reads_the_others_forges_no_line_and_overwrites_nothing(tmp_path, digit_png):
    folder = tmp_path / "pictures"
    folder.mkdir()
    (folder / "a-seven.png").write_bytes(digit_png(7))
    (folder / "b-nan.tif").write_bytes(hostile_files.float_tiff_with_nan())
    (folder / "c\nd-one.png").write_bytes(digit_png(1))  # A newline in the name.
    (folder / "c\nd-one-2.png").write_bytes(b"a file of the user's that happens to have the next name")
    originals = {path.name: path.read_bytes() for path in folder.iterdir()}

    result = digits("predict", str(folder), "--show", str(folder))  # Views written beside the inputs.

    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4, lines  # One line per file: the newline in a name is escaped, not printed.
    assert lines[0].startswith(f"{folder / 'a-seven.png'}: 7 (")
    assert lines[1].startswith(f"{folder / 'b-nan.tif'}: error: ") and "not numbers" in lines[1]
    assert lines[2].startswith(f"{folder}/c\\nd-one-2.png: error: ")
    assert lines[3].startswith(f"{folder}/c\\nd-one.png: 1 (")
    for name, content in originals.items():
        assert (folder / name).read_bytes() == content, f"{name!r} was written over"
    views = sorted({path.name for path in folder.iterdir()} - set(originals))
    assert views == ["a-seven-2.png", "c\nd-one-3.png"]
    with Image.open(folder / "a-seven-2.png") as sheet:
        assert sheet.width > 2 * 280


# --- 13. the native-stderr log -----------------------------------------------------------------------------


@pytest.mark.slow
def test_tensorflow_start_up_noise_is_hidden_and_its_log_leaves_nothing_in_the_temporary_folder(tmp_path):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    noise = ("absl::InitializeLog", "oneDNN custom operations", "cuda drivers")
    shown = digits("models", "cnn", TMPDIR=str(temporary), DIGITS_NATIVE_STDERR="1")  # the noise, as asked for
    assert shown.returncode == 0 and any(line in shown.stderr for line in noise), shown.stderr
    hidden = digits("models", "cnn", TMPDIR=str(temporary))
    assert hidden.returncode == 0 and "34,826" in hidden.stdout
    assert not any(line in hidden.stderr for line in noise), hidden.stderr
    assert list(temporary.iterdir()) == []  # The log was an anonymous file: nothing is left, nothing was named.


# --- issue 24, item 12: every count a user gives has a range, checked before any work ------------------------


@pytest.mark.parametrize("arguments, words", [
    (["serve", "--port", "70000"], "--port must be between 0 and 65,535, not 70000."),
    (["ensemble", "--from-sweep", "study", "--top", "1000"], "--top must be between 1 and 100, not 1000."),
    (["sweep", "best", "study", "--seeds", "1000"], "--seeds must be between 1 and 100, not 1000."),
    (["predict", "a.png", "--top", "11"], "--top must be between 1 and 10, not 11."),
])
def test_a_count_out_of_its_range_is_one_sentence_before_any_work(tmp_path, monkeypatch, capsys, arguments, words):
    from digits.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(arguments) == 1
    assert capsys.readouterr().err.strip() == f"digits: error: {words}"
    assert list(tmp_path.iterdir()) == []  # no database, run folder or server


# --- output into a reader that leaves early -----------------------------------------------------------


def test_output_piped_into_a_reader_that_leaves_early_ends_quietly(tmp_path, digit_png):
    # `digits predict --json | head`: head leaves after a few lines, and the rest of the answer meets a closed pipe.
    picture = tmp_path / "seven.png"
    picture.write_bytes(digit_png(7))
    # 150 answers, about 160 KB: more than a pipe holds, so the writes go on after the reader has left.
    command = [sys.executable, "-m", "digits", "predict", "--json", *[str(picture)] * 150]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        assert process.stdout.read(2) == "{\n"
        process.stdout.close()
        status = process.wait(timeout=120)
        errors = process.stderr.read()
    assert "Traceback" not in errors and "Exception ignored" not in errors
    assert status == 141  # As a shell reports a program ended by SIGPIPE, so `set -o pipefail` still sees it.
