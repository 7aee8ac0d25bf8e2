"""Issue 15: damaged, read-only or full run folders and data folders end in one sentence; SIGTERM keeps an epoch."""

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from digits.cli import main
from digits.data import mnist as data
from digits.errors import DigitsError
from digits.inference.classifier import PRETRAINED_MODEL
from digits.training import runs

HEADER = ",".join(runs.HISTORY_COLUMNS) + "\n"
GOOD = {
    "config.json": '{"preset": "cnn", "recipe": {"model": "cnn", "test_limit": null}, "data": {"train_images": 60000}}',
    "metrics.json": '{"status": "complete", "epochs": 1, "validation": "test", "validation_accuracy": 0.99}',
    "history.csv": HEADER + "1,0.1,0.97,0.05,0.99,3.5\n",
}
# Hand-damaged files: wrong types, empty values, deep nesting, huge fields, bytes that are not text, numbers that are
# not finite or out of their range.
DAMAGED = [
    ("config.json", ""), ("config.json", "[]"), ("config.json", "{"), ("config.json", '{"recipe": 5}'),
    ("config.json", '{"recipe": {"model": 5}}'), ("config.json", '{"recipe": {"model": "cnn", "test_limit": "x"}}'),
    ("config.json", '{"recipe": {"model": "cnn"}, "data": []}'), ("config.json", '{"data": {"train_images": "many"}}'),
    ("config.json", "[" * 100_000), ("config.json", '{"preset": "' + "x" * (11 * 2**20) + '"}'),
    ("metrics.json", ""), ("metrics.json", "null"), ("metrics.json", '{"status": 5}'),
    ("metrics.json", '{"status": "complete", "epochs": "3"}'),
    ("metrics.json", '{"status": "complete", "validation_accuracy": "high"}'),
    ("metrics.json", '{"status": "complete", "training_seconds": []}'),
    ("metrics.json", '{"status": "complete", "target_accuracy": "yes"}'), ("metrics.json", '{"a":' * 50_000),
    ("metrics.json", '{"status": "complete", "parameters": true}'), ("metrics.json", b"\xff\xfe\x00{"),
    ("metrics.json", '{"status": "complete", "validation_accuracy": NaN}'),
    ("metrics.json", '{"status": "complete", "validation_accuracy": 1.5}'),
    ("metrics.json", '{"status": "complete", "training_seconds": -Infinity}'),
    ("metrics.json", '{"status": "complete", "target_accuracy": {"target": 0.99, "epoch": -1}}'),
    ("config.json", '{"recipe": {"model": "cnn", "learning_rate": Infinity}}'),
    ("config.json", '{"recipe": {"model": "cnn"}, "data": {"train_images": 1e3}}'),
    ("history.csv", ""), ("history.csv", "epoch\n"), ("history.csv", HEADER + "1,,,,,\n"),
    ("history.csv", HEADER + "a,b,c,d,e,f\n"), ("history.csv", HEADER + "1,2\n"), ("history.csv", HEADER + "1,\0,2\n"),
    ("history.csv", HEADER + "x" * 200_000 + "\n"),
    ("history.csv", "loss,epoch,accuracy,val_loss,val_accuracy,seconds\n"),
    ("history.csv", HEADER + "1,0.1,0.9,0.1,0.9\n"), ("history.csv", b"\xff\xfe\x00\x01"),
]


@pytest.fixture
def run_folder(tmp_path) -> Path:
    folder = tmp_path / "20260101-000000-cnn"
    folder.mkdir()
    for name, content in GOOD.items():
        (folder / name).write_text(content)
    shutil.copy(PRETRAINED_MODEL, folder / "model.keras")
    return folder


def test_the_undamaged_run_folder_reads(run_folder):
    assert runs.load_run(run_folder).metrics["epochs"] == 1


def test_keys_a_newer_digits_adds_are_kept(run_folder):
    # Forward compatibility: unknown keys are allowed (the known ones are still checked) and read back as written.
    (run_folder / "metrics.json").write_text('{"status": "complete", "epochs": 1, "energy_joules": [1, 2]}')
    assert runs.load_run(run_folder).metrics["energy_joules"] == [1, 2]


def test_a_run_folder_written_before_the_declared_models_still_loads(tmp_path):
    # The shipped model's folder was written when Recipe was a dataclass and run files were checked by hand.
    import digits
    from digits.inference.classifier import PRETRAINED_DIR
    from digits.training.presets import get_preset

    folder = tmp_path / "20261129-144008-pretrained"
    folder.mkdir()
    for name in ("config.json", "metrics.json", "history.csv", "model.keras", "calibration.json"):
        shutil.copy(PRETRAINED_DIR / name, folder / name)
    run = digits.load_run(folder)
    assert run.recipe == get_preset("pretrained") and run.metrics["status"] == "complete"


def test_a_recipe_digits_cannot_build_is_one_sentence_naming_config_json(run_folder):
    import digits

    (run_folder / "config.json").write_text('{"recipe": {"model": "cnn", "loss": "hinge"}}')
    with pytest.raises(DigitsError, match=r"config\.json holds a recipe digits cannot use \(Unknown loss 'hinge'; "
                                          r".*\); the run is damaged, so train it again\.$"):
        digits.load_run(run_folder)


# --- calibration.json: a temperature or threshold that is not finite, or out of its range ----------------

BAD_CALIBRATIONS = [
    ('{"temperature": NaN}', "gives temperature as nan, but it must be a finite number"),
    ('{"temperature": Infinity}', "gives temperature as inf, but it must be a finite number"),
    ('{"temperature": 1e-320}', "gives temperature as 1e-320, but it must be between 0.05 and 20.0"),
    ('{"temperature": "2"}', "gives temperature as '2', but it must be a number"),
    ('{"not_a_digit": {"score": "digit_score", "threshold": NaN}}', "gives not_a_digit.threshold as nan"),
    ('{"not_a_digit": {"score": "digit_score", "threshold": 1.5}}', "must be between 0 and 1"),
    ('{"not_a_digit": {"score": "luck", "threshold": 0.5}}', "must be one of digit_score, max_probability"),
]


@pytest.mark.parametrize(("content", "words"), BAD_CALIBRATIONS, ids=[words for _, words in BAD_CALIBRATIONS])
def test_a_calibration_json_digits_cannot_use_is_one_sentence_naming_it(tmp_path, content, words):
    path = tmp_path / "calibration.json"
    path.write_text(content)
    with pytest.raises(DigitsError) as caught:
        runs.read_calibration(path)
    message = str(caught.value)
    assert message.startswith(f"{path} ") and words in message and "\n" not in message, message
    assert message.endswith("calibrate the run again (`digits evaluate RUN --calibrate`).")


def test_a_run_with_a_nan_temperature_is_refused_when_loaded(run_folder, capsys):
    from digits.inference.classifier import load_classifier

    (run_folder / "calibration.json").write_text('{"temperature": NaN, "fitted_on": "the holdout"}')
    with pytest.raises(DigitsError, match=r"calibration\.json gives temperature as nan, but it must be a finite"):
        load_classifier(run_folder)
    (run_folder / "calibration.json").write_text('{"temperature": 1.5, "future_key": {"a": 1}}')
    assert load_classifier(run_folder).temperature == 1.5


@pytest.mark.parametrize(("name", "content"), DAMAGED,
                         ids=[f"{name}-{index}" for index, (name, _) in enumerate(DAMAGED)])
def test_a_hand_damaged_run_file_is_one_sentence(run_folder, name, content, capsys):
    target = run_folder / name
    target.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert main(["evaluate", str(run_folder)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("digits: error: ") and error.count("\n") == 0 and "train it again" in error, error
    assert len(error) < 400


# --- data: decompression bombs, files larger than they say, unreadable folders --------------------------


def test_a_gzip_bomb_is_refused_from_its_header_without_inflating_it(tmp_path, tiny_mnist_dir):
    images_file = tiny_mnist_dir / "t10k-images-idx3-ubyte"
    header = (0x803).to_bytes(4, "big") + (3_800_000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    images_file.unlink()
    with gzip.open(tiny_mnist_dir / "t10k-images-idx3-ubyte.gz", "wb") as bomb:
        bomb.write(header)
        for _ in range(30):  # 30 MB of zeros here; the same header on 3 GB is refused the same way.
            bomb.write(bytes(2**20))
    with pytest.raises(data.DataError, match=r"announces 2,979,200,016 bytes of data, more than the 1,073,741,824"):
        data.load_mnist(tiny_mnist_dir)


def test_a_file_longer_than_its_header_says_is_refused(tiny_mnist_dir, tiny_mnist):
    labels = tiny_mnist_dir / "t10k-labels-idx1-ubyte"
    labels.unlink()
    content = (0x801).to_bytes(4, "big") + (20).to_bytes(4, "big") + tiny_mnist["test_labels"].tobytes()
    (tiny_mnist_dir / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(content + bytes(5_000_000)))
    with pytest.raises(data.DataError, match="does not match its header"):
        data.load_mnist(tiny_mnist_dir)


def test_a_huge_sparse_raw_file_is_refused_unread(tiny_mnist_dir):
    images_file = tiny_mnist_dir / "train-images-idx3-ubyte"
    header = (0x803).to_bytes(4, "big") + (30_000_000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    with open(images_file, "wb") as sparse:
        sparse.write(header)
        sparse.truncate(20 * 10**9)  # 20 GB on paper, a few bytes on disk.
    with pytest.raises(data.DataError, match="more than the 1,073,741,824"):
        data.load_mnist(tiny_mnist_dir)


def test_an_unreadable_data_folder_is_one_sentence(tmp_path, monkeypatch):
    def refuse(self):
        raise PermissionError(13, "Permission denied")  # What a folder of another user's gives (tests run as root).

    monkeypatch.setattr(Path, "is_dir", refuse)
    with pytest.raises(data.DataError,
                       match=r"Cannot read the data directory .* \(Permission denied\); check its permissions"):
        data.load_mnist(tmp_path)


# --- runs folders that cannot be written ------------------------------------------------------------------


def digits(*arguments: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digits", *arguments], capture_output=True, text=True, timeout=timeout,
                          check=False)


QUICK = ["train", "quick-shallow", "--epochs", "1", "--train-limit", "2000", "--test-limit", "500"]


@pytest.mark.slow  # digits train loads Keras before it checks the folder, as training.fit.train does
def test_a_runs_dir_that_cannot_be_created_is_refused_before_mnist_loads_or_a_model_compiles(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = digits(*QUICK, "--runs-dir", str(blocker / "runs"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith(f"digits: error: Cannot write runs in {blocker / 'runs'}")


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KB file system of its own (a tmpfs; needs root), full long before a model fits."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


@pytest.mark.slow
def test_a_full_disk_leaves_no_run_that_looks_complete(small_disk):
    result = digits(*QUICK, "--runs-dir", str(small_disk))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "No space left on device" in result.stderr and "incomplete" in result.stderr
    [run_dir] = small_disk.iterdir()
    left = sorted(path.name for path in run_dir.iterdir())
    assert "metrics.json" not in left and "model.keras" not in left and not [n for n in left if "partial" in n], left
    with pytest.raises(DigitsError, match="incomplete .*disk was full"):
        runs.load_run(run_dir)


@pytest.mark.slow
def test_a_read_only_runs_dir_is_refused_in_one_sentence(small_disk):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    result = digits(*QUICK, "--runs-dir", str(small_disk))
    assert result.returncode == 1 and "Read-only file system" in result.stderr and "Traceback" not in result.stderr


# SIGTERM during training: tests/test_train.py, beside Ctrl-C (one test, both signals).
