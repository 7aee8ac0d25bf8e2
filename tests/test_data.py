"""digits.data.mnist: parsing, every kind of damage, the lookup order, checksums, npz and downloads (offline)."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import socket
import threading

import numpy as np
import pytest

from digits.data import mnist as data
from digits.data import statistics
from digits.errors import DigitsError

NAMES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No user settings, a private cache, no mirrors (so nothing can reach the network), no cached arrays."""
    monkeypatch.delenv("DIGITS_DATA_DIR", raising=False)
    monkeypatch.setenv("DIGITS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "MIRRORS", ())
    data._read_idx_set.cache_clear()
    yield
    data._read_idx_set.cache_clear()


@pytest.fixture
def tiny_is_official(monkeypatch, tmp_path, tiny_mnist, idx_writer):
    """Make the tiny data set the "official" one; returns the .gz bytes a mirror should serve, by file name."""
    official, served = {}, {}
    for part, array in tiny_mnist.items():
        content = idx_writer(tmp_path / f"{part}.idx", array).read_bytes()
        compressed = gzip.compress(content, mtime=0)
        official[part] = data.OfficialFile(NAMES[part], hashlib.sha256(content).hexdigest(), len(content),
                                           hashlib.sha256(compressed).hexdigest(), len(compressed))
        served[NAMES[part] + ".gz"] = compressed
    monkeypatch.setattr(data, "OFFICIAL", official)
    return served


def assert_one_sentence(error: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(error.value)
    assert isinstance(error.value, DigitsError)
    assert "\n" not in message and message.endswith("."), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def assert_same(mnist: data.Mnist, arrays: dict[str, np.ndarray]) -> None:
    for part, array in arrays.items():
        loaded = getattr(mnist, part)
        assert loaded.dtype == np.uint8
        np.testing.assert_array_equal(loaded, array)


# --- parsing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("spelling", ["-idx", ".idx"])
def test_reads_raw_and_gzip_idx_under_both_names(tmp_path, tiny_mnist, idx_writer, suffix, spelling):
    for part, name in NAMES.items():
        idx_writer(tmp_path / (name.replace("-idx", spelling) + suffix), tiny_mnist[part])

    mnist = data.load_mnist(tmp_path)

    assert_same(mnist, tiny_mnist)
    assert mnist.train_images.shape == (60, 28, 28)
    assert str(tmp_path) in mnist.source
    # Not MNIST's checksums: another data set in the same layout, structure checked, marked unverified.
    assert mnist.verified is False


def test_loaded_arrays_are_read_only_and_load_twice_for_free(tiny_mnist_dir):
    first = data.load_mnist(tiny_mnist_dir)
    second = data.load_mnist(str(tiny_mnist_dir))
    assert second.train_images is first.train_images
    with pytest.raises(ValueError):
        first.train_images[0, 0, 0] = 1


def test_a_file_changed_on_disk_is_read_again(tiny_mnist_dir, idx_writer):
    data.load_mnist(tiny_mnist_dir)
    idx_writer(tiny_mnist_dir / NAMES["test_labels"], np.full(20, 11, dtype=np.uint8))
    with pytest.raises(data.DataError):
        data.load_mnist(tiny_mnist_dir)


def test_vendored_mnist_is_the_official_data():
    mnist = data.load_mnist()

    assert mnist.verified is True
    assert "vendored" in mnist.source
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.test_images.shape == (10000, 28, 28)
    assert mnist.train_labels[:12].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4, 3, 5]
    assert mnist.test_labels[0] == 7
    assert statistics.class_counts(mnist.test_labels).tolist() == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert statistics.pixel_statistics(mnist.train_images)["mean"] == pytest.approx(33.318, abs=5e-4)


def test_pixel_statistics_agree_with_numpy(tiny_mnist):
    images = tiny_mnist["train_images"]
    stats = statistics.pixel_statistics(images)
    assert stats == pytest.approx({"min": 0, "max": 255, "mean": images.mean(), "std": images.std()})


def test_to_model_input_scales_to_unit_range_with_a_channel(tiny_mnist):
    model_input = data.to_model_input(tiny_mnist["test_images"])
    assert model_input.shape == (20, 28, 28, 1) and model_input.dtype == np.float32
    assert model_input.min() == 0.0 and model_input.max() == 1.0
    with pytest.raises(ValueError, match="uint8"):
        data.to_model_input(model_input[..., 0])


# --- damage, each with one sentence naming the file --------------------------------------------------


def rewrite(path, transform):
    path.write_bytes(transform(path.read_bytes()))


@pytest.mark.parametrize(
    ("name", "transform", "expected"),
    [
        (NAMES["train_images"], lambda raw: b"\x00\x00\x12\x34" + raw[4:], "magic number is 0x00001234"),
        (NAMES["train_images"], lambda raw: raw[:10], "is truncated"),
        (NAMES["test_images"], lambda raw: raw[:-100], "is truncated: its header announces 20 images of 28x28"),
        (NAMES["test_labels"], lambda raw: raw + b"\x00" * 3, "does not match its header"),
        (NAMES["train_labels"], lambda raw: raw[:8] + b"\x0c" + raw[9:], "label 12 at position 0"),
        (NAMES["test_labels"], lambda raw: raw[:4] + (19).to_bytes(4, "big") + raw[8:-1], "holds 19 labels"),
    ],
    ids=["wrong-magic", "truncated-header", "truncated-data", "size-mismatch", "label-outside-0-9",
         "count-disagreement"],
)
def test_damaged_idx_file_is_refused_in_one_sentence(tiny_mnist_dir, name, transform, expected):
    rewrite(tiny_mnist_dir / name, transform)
    with pytest.raises(data.DataError) as error:
        data.load_mnist(tiny_mnist_dir)
    assert_one_sentence(error, expected, "replace it with a good copy")
    assert name in str(error.value)


def test_swapped_image_and_label_files_are_named(tiny_mnist_dir):
    images, labels = (tiny_mnist_dir / NAMES["test_images"], tiny_mnist_dir / NAMES["test_labels"])
    images_bytes = images.read_bytes()
    images.write_bytes(labels.read_bytes())
    labels.write_bytes(images_bytes)
    with pytest.raises(data.DataError) as error:
        data.load_mnist(tiny_mnist_dir)
    assert_one_sentence(error, NAMES["test_images"], "swapped")


def test_images_that_are_not_28x28_are_refused(tmp_path, tiny_mnist, idx_writer):
    for part, name in NAMES.items():
        idx_writer(tmp_path / name, tiny_mnist[part])
    idx_writer(tmp_path / NAMES["train_images"], np.zeros((60, 32, 32), dtype=np.uint8))
    with pytest.raises(data.DataError) as error:
        data.load_mnist(tmp_path)
    assert_one_sentence(error, NAMES["train_images"], "32x32", "28x28")


@pytest.mark.parametrize(("transform", "expected"), [
    (lambda packed: packed[: len(packed) // 2], "is truncated: its gzip stream ends early"),
    (lambda packed: packed[:-8] + bytes(byte ^ 0xFF for byte in packed[-8:-4]) + packed[-4:], "gzip data is corrupt"),
], ids=["truncated", "bad-crc"])
def test_damaged_gzip_file_is_refused(tmp_path, tiny_mnist, idx_writer, transform, expected):
    for part, name in NAMES.items():
        idx_writer(tmp_path / (name + ".gz"), tiny_mnist[part])
    rewrite(tmp_path / (NAMES["train_images"] + ".gz"), transform)
    with pytest.raises(data.DataError) as error:
        data.load_mnist(tmp_path)
    assert_one_sentence(error, NAMES["train_images"] + ".gz", expected)


def test_missing_file_says_which_and_how_to_fix(tiny_mnist_dir):
    (tiny_mnist_dir / NAMES["train_labels"]).unlink()
    with pytest.raises(data.DataError) as error:
        data.load_mnist(tiny_mnist_dir)
    assert_one_sentence(error, "training labels (train-labels-idx1-ubyte[.gz])", "copy the missing files there")
    assert "test labels" not in str(error.value)


def test_missing_or_empty_directory_is_explained(tmp_path):
    with pytest.raises(data.DataError) as error:
        data.load_mnist(tmp_path / "nowhere")
    assert_one_sentence(error, "nowhere", "does not exist", "leave out `data_dir`")
    with pytest.raises(data.DataError) as error:
        data.load_mnist(tmp_path)
    assert_one_sentence(error, "holds no MNIST-style data", "train-images-idx3-ubyte", "mnist.npz")



def test_the_study_reads_the_same_data_beside_its_imports_and_refuses_the_same_way(tiny_mnist_dir, tmp_path):
    # `digits run` reads MNIST in a second thread while TensorFlow imports: the arrays and errors must not change.
    from digits.study import load_mnist_while_importing

    beside, plain = load_mnist_while_importing(tiny_mnist_dir), data.load_mnist(tiny_mnist_dir)
    assert (beside.train_images == plain.train_images).all() and (beside.test_labels == plain.test_labels).all()
    assert beside.source == plain.source
    with pytest.raises(data.DataError) as error:
        load_mnist_while_importing(tmp_path / "nowhere")
    assert_one_sentence(error, "nowhere", "does not exist", "leave out `data_dir`")

# --- checksums and the known/unknown rule ------------------------------------------------------------


def test_official_checksums_mark_the_data_verified(tiny_is_official, tiny_mnist_dir):
    assert data.load_mnist(tiny_mnist_dir).verified is True


def test_same_size_file_with_wrong_checksum_is_damaged_mnist(tiny_is_official, tiny_mnist_dir):
    # One pixel changed: still a valid IDX file of the official size, so only the checksum can tell.
    rewrite(tiny_mnist_dir / NAMES["train_images"], lambda raw: raw[:500] + bytes([raw[500] ^ 1]) + raw[501:])
    with pytest.raises(data.DataError) as error:
        data.load_mnist(tiny_mnist_dir)
    assert_one_sentence(error, NAMES["train_images"], "fails the checksum check", "damaged")


def test_a_different_sized_split_beside_official_files_is_unverified(tiny_is_official, tiny_mnist_dir, idx_writer):
    idx_writer(tiny_mnist_dir / NAMES["test_images"], np.zeros((5, 28, 28), dtype=np.uint8))
    idx_writer(tiny_mnist_dir / NAMES["test_labels"], np.arange(5, dtype=np.uint8))
    mnist = data.load_mnist(tiny_mnist_dir)
    assert mnist.verified is False and mnist.test_images.shape == (5, 28, 28)


def test_describe_shows_counts_and_flags_unverified_data(tiny_mnist_dir):
    report = statistics.describe(data.load_mnist(tiny_mnist_dir))
    assert "UNVERIFIED" in report
    assert "(60, 28, 28)" in report
    counts_section = report.split("Class counts\n")[1].split("\n\n")[0]
    rows = {line.split()[0]: line.split()[1:] for line in counts_section.splitlines()}
    assert rows["class"] == [str(digit) for digit in range(10)] + ["total"]
    assert rows["training"] == ["6"] * 10 + ["60"] and rows["test"] == ["2"] * 10 + ["20"]
    assert "First 12 training labels: 0 1 2 3 4 5 6 7 8 9 0 1" in report


# --- npz ---------------------------------------------------------------------------------------------


def save_npz(path, arrays, **overrides):
    contents = {key: arrays[part] for part, key in data.NPZ_KEYS.items()}
    contents["y_train"] = contents["y_train"].astype(np.int64)  # Keras stores uint8; others may not.
    np.savez_compressed(path, **(contents | overrides))
    return path


def test_reads_keras_style_npz_from_a_directory_or_as_a_file(tmp_path, tiny_mnist):
    save_npz(tmp_path / "mnist.npz", tiny_mnist)
    for location in (tmp_path, tmp_path / "mnist.npz"):
        mnist = data.load_mnist(location)
        assert_same(mnist, tiny_mnist)
        assert "mnist.npz" in mnist.source and mnist.verified is False


def test_npz_holding_official_arrays_is_verified(tiny_is_official, tmp_path, tiny_mnist):
    assert data.load_mnist(save_npz(tmp_path / "mnist.npz", tiny_mnist)).verified is True


def test_bad_npz_files_are_refused(tmp_path, tiny_mnist):
    path = save_npz(tmp_path / "mnist.npz", tiny_mnist, y_test=np.arange(20) + 5)
    with pytest.raises(data.DataError) as error:
        data.load_mnist(path)
    assert_one_sentence(error, "mnist.npz[y_test]", "label 10")

    np.savez(path, x_train=tiny_mnist["train_images"])
    with pytest.raises(data.DataError) as error:
        data.load_mnist(path)
    assert_one_sentence(error, "lacks the arrays y_train, x_test, y_test")

    path.write_bytes(b"not a zip file")
    with pytest.raises(data.DataError) as error:
        data.load_mnist(path)
    assert_one_sentence(error, "is not a readable npz file")


# --- lookup order ------------------------------------------------------------------------------------


def test_argument_beats_environment_which_beats_vendored(monkeypatch, tmp_path, tiny_mnist, tiny_mnist_dir, idx_writer):
    from_environment = tmp_path / "from-environment"
    from_environment.mkdir()
    for part, name in NAMES.items():
        idx_writer(from_environment / name, tiny_mnist[part][:10] if part.startswith("test") else tiny_mnist[part])
    monkeypatch.setenv("DIGITS_DATA_DIR", str(from_environment))

    mnist = data.load_mnist()
    assert mnist.test_images.shape == (10, 28, 28) and "DIGITS_DATA_DIR" in mnist.source
    assert data.load_mnist(tiny_mnist_dir).test_images.shape == (20, 28, 28)


def test_bad_environment_directory_says_to_unset_it(monkeypatch, tmp_path):
    monkeypatch.setenv("DIGITS_DATA_DIR", str(tmp_path / "gone"))
    with pytest.raises(data.DataError) as error:
        data.load_mnist()
    assert_one_sentence(error, "gone", "unset DIGITS_DATA_DIR")


def test_cache_is_used_when_nothing_is_vendored(monkeypatch, tmp_path, tiny_is_official, tiny_mnist, idx_writer):
    monkeypatch.setattr(data, "VENDORED_DIR", tmp_path / "not-installed")
    cache = tmp_path / "cache"
    cache.mkdir()
    for part, name in NAMES.items():
        idx_writer(cache / (name + ".gz"), tiny_mnist[part])

    mnist = data.load_mnist()

    assert mnist.verified is True and f"user cache in {cache}" == mnist.source
    assert_same(mnist, tiny_mnist)


def test_damaged_cache_file_asks_to_delete_it(monkeypatch, tmp_path, tiny_is_official, tiny_mnist, idx_writer):
    monkeypatch.setattr(data, "VENDORED_DIR", tmp_path / "not-installed")
    cache = tmp_path / "cache"
    cache.mkdir()
    for part, name in NAMES.items():
        idx_writer(cache / name, tiny_mnist[part])
    rewrite(cache / NAMES["test_images"], lambda raw: raw[:-1] + b"\x07")
    with pytest.raises(data.DataError) as error:
        data.load_mnist()
    assert_one_sentence(error, NAMES["test_images"], "checksum", "delete it")


def test_incomplete_vendored_copy_is_reported(monkeypatch, tiny_mnist_dir):
    (tiny_mnist_dir / NAMES["test_images"]).unlink()
    monkeypatch.setattr(data, "VENDORED_DIR", tiny_mnist_dir)
    with pytest.raises(data.DataError) as error:
        data.load_mnist()
    assert_one_sentence(error, "test images", "reinstall digits")


def test_cache_location_follows_environment(monkeypatch, tmp_path):
    assert data.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("DIGITS_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.cache_dir() == tmp_path / "xdg" / "digits" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.cache_dir() == tmp_path / "home" / ".cache" / "digits" / "mnist"


# --- downloads from a fake mirror on loopback --------------------------------------------------------


class FakeMirror:
    """An HTTP server on 127.0.0.1 serving `routes` (path -> bytes); it records every path requested."""

    def __init__(self):
        self.routes: dict[str, bytes] = {}
        self.requested: list[str] = []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                mirror.requested.append(self.path)
                body = mirror.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror(monkeypatch, tmp_path):
    for variable in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(data, "VENDORED_DIR", tmp_path / "not-installed")
    fake = FakeMirror()
    yield fake
    fake.close()


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cache_contents(tmp_path) -> list[str]:
    cache = tmp_path / "cache"
    return sorted(path.name for path in cache.iterdir()) if cache.exists() else []


def test_download_skips_dead_and_bad_mirrors_and_stores_verified_files(monkeypatch, tmp_path, mirror, tiny_is_official,
                                                                       tiny_mnist, capsys):
    for name, body in tiny_is_official.items():
        mirror.routes[f"/bad/{name}"] = body[:-1] + bytes([body[-1] ^ 1])
        mirror.routes[f"/good/{name}"] = body
    monkeypatch.setattr(data, "MIRRORS", (f"http://127.0.0.1:{unused_port()}/", f"{mirror.url}/missing/",
                                          f"{mirror.url}/bad/", f"{mirror.url}/good/"))

    mnist = data.load_mnist()

    assert_same(mnist, tiny_mnist)
    assert mnist.verified is True and f"downloaded now from {mirror.url}/good/" in mnist.source
    # Exactly the four verified files: no partial or bad download is left behind.
    assert cache_contents(tmp_path) == sorted(tiny_is_official)
    assert "downloading train-images-idx3-ubyte.gz" in capsys.readouterr().err

    # The next load finds everything in the cache and asks no mirror.
    mirror.requested.clear()
    data._read_idx_set.cache_clear()
    assert "downloaded" not in data.load_mnist().source and mirror.requested == []


def test_only_missing_files_are_downloaded(monkeypatch, tmp_path, mirror, tiny_is_official):
    cache = tmp_path / "cache"
    cache.mkdir()
    for name, body in tiny_is_official.items():
        mirror.routes[f"/{name}"] = body
        if name.startswith("train"):
            (cache / name).write_bytes(body)
    monkeypatch.setattr(data, "MIRRORS", (mirror.url,))

    assert data.load_mnist().verified is True
    assert sorted(mirror.requested) == ["/t10k-images-idx3-ubyte.gz", "/t10k-labels-idx1-ubyte.gz"]


def test_file_urls_work_as_mirrors(monkeypatch, tmp_path, mirror, tiny_is_official):
    local = tmp_path / "local-mirror"
    local.mkdir()
    for name, body in tiny_is_official.items():
        (local / name).write_bytes(body)
    monkeypatch.setattr(data, "MIRRORS", (local.as_uri() + "/",))
    assert data.load_mnist().verified is True


@pytest.mark.parametrize("serve", [
    lambda body: body[:-1] + bytes([body[-1] ^ 0xFF]),  # wrong bytes
    lambda body: body[: len(body) // 2],  # cut short
    lambda body: body + b"padding",  # too long
], ids=["wrong-bytes", "short", "too-long"])
def test_failed_download_names_the_file_and_leaves_nothing(monkeypatch, tmp_path, mirror, tiny_is_official, serve):
    for name, body in tiny_is_official.items():
        mirror.routes[f"/{name}"] = serve(body)
    dead = f"http://127.0.0.1:{unused_port()}/"
    monkeypatch.setattr(data, "MIRRORS", (dead, mirror.url + "/"))

    with pytest.raises(data.DataError) as error:
        data.load_mnist()

    assert_one_sentence(error, "Could not download train-images-idx3-ubyte.gz from any mirror", dead, mirror.url,
                        "`data_dir`")
    assert cache_contents(tmp_path) == []
