"""MNIST as four uint8 arrays: find the files, check their structure and checksums, parse them.

Where the data comes from, first match wins:
  1. an explicit directory: the `data_dir` argument, else the `DIGITS_DATA_DIR` environment variable;
  2. the copy vendored in the package (`digits/mnist/`);
  3. the user's cache (`$DIGITS_CACHE_DIR`, else `$XDG_CACHE_HOME/digits/mnist`, else `~/.cache/digits/mnist`),
     where missing files are first downloaded from `MIRRORS` (sha256 checked, written atomically).

A directory may hold the four IDX files, raw or gzip-compressed, named `train-images-idx3-ubyte` or
`train-images.idx3-ubyte` (and so on), or Keras's `mnist.npz`.

Verification: the sha256 of each decompressed IDX file (for an npz, of its arrays written out as IDX) is
compared with the official MNIST value. The vendored copy and the cache must match. In an explicit
directory, data whose four files all differ from MNIST is another data set in MNIST's layout
(Fashion-MNIST and KMNIST even share MNIST's file sizes): it loads with `verified=False` after its
structure is checked. A file that differs while others in the same set match, and that has the official
size, is a damaged copy of MNIST and is refused.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digits.data import download
from digits.errors import DigitsError


class DataError(DigitsError):
    """MNIST is missing, damaged, malformed or could not be downloaded."""


@dataclass(frozen=True, eq=False)
class Mnist:
    """The four MNIST arrays (read-only; copy one before changing it in place) and where they came from."""

    train_images: np.ndarray  # (60000, 28, 28) uint8, ink is bright (255) on black (0)
    train_labels: np.ndarray  # (60000,) uint8 in 0..9
    test_images: np.ndarray  # (10000, 28, 28) uint8
    test_labels: np.ndarray  # (10000,) uint8
    source: str  # where it came from, for people
    verified: bool  # True when every sha256 matched the official MNIST values

    def __repr__(self) -> str:
        return (
            f"Mnist(train={self.train_images.shape}, test={self.test_images.shape}, "
            f"source={self.source!r}, verified={self.verified})"
        )


@dataclass(frozen=True)
class OfficialFile:
    name: str  # the canonical file name, without ".gz"
    idx_sha256: str  # of the decompressed IDX file
    idx_bytes: int
    gz_sha256: str  # of the compressed file the public mirrors serve
    gz_bytes: int


# The four parts of a data set, in the order of Mnist's fields; the values are in SHA256SUMS and the
# data's README.
PARTS = ("train_images", "train_labels", "test_images", "test_labels")
OFFICIAL = {
    "train_images": OfficialFile(
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47_040_016,
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9_912_422,
    ),
    "train_labels": OfficialFile(
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60_008,
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28_881,
    ),
    "test_images": OfficialFile(
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7_840_016,
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1_648_877,
    ),
    "test_labels": OfficialFile(
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10_008,
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4_542,
    ),
}
# For messages: "training images", "test labels", ...
PART_TITLES = {part: part.replace("train_", "training_").replace("_", " ") for part in PARTS}
NPZ_NAME = "mnist.npz"
NPZ_KEYS = {"train_images": "x_train", "train_labels": "y_train", "test_images": "x_test", "test_labels": "y_test"}
# Keras's mnist.npz; any other npz is verified through its arrays instead.
NPZ_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"

# Tried in turn for each missing file (torchvision's, then TFDS's); tests point this at a local server.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
VENDORED_DIR = Path(__file__).parents[1] / "mnist"

IMAGE_MAGIC = 0x00000803  # IDX: unsigned bytes, 3 dimensions
LABEL_MAGIC = 0x00000801  # IDX: unsigned bytes, 1 dimension
IMAGE_SIDE = 28  # every model takes 28x28 inputs
CLASSES = 10
# No IDX file digits reads is larger: MNIST's training images are 47 MB, EMNIST's largest split 550 MB.
MAX_IDX_BYTES = 1024 * 2**20


def load_mnist(data_dir: str | Path | None = None) -> Mnist:
    """Find, check and parse MNIST (see the module docstring for the order and the rules)."""
    origin = "data_dir"
    if data_dir is None and os.environ.get("DIGITS_DATA_DIR"):
        data_dir, origin = os.environ["DIGITS_DATA_DIR"], "DIGITS_DATA_DIR"
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        try:
            return _load_explicit(path, origin)
        except OSError as error:  # A folder we may not read or enter (its permissions, a broken mount).
            raise DataError(f"Cannot read the data directory {path} ({error.strerror or error}); check its "
                            "permissions, or give another `data_dir`.") from None

    vendored = _find_files(VENDORED_DIR)
    if vendored:
        fix = "reinstall digits (or restore src/digits/mnist from git) to repair the vendored copy"
        _require_all(vendored, VENDORED_DIR, fix)
        return _load_idx(vendored, "trusted", f"vendored copy in {VENDORED_DIR}", fix)

    cache = cache_dir()
    cached = _find_files(cache)
    downloaded_from = {part: _download(part, cache) for part in PARTS if part not in cached}
    cached.update({part: path for part, (path, _) in downloaded_from.items()})
    source = f"user cache in {cache}"
    if downloaded_from:
        source += f" (downloaded now from {sorted({url for _, url in downloaded_from.values()})[0]})"
    fix = "delete it so that digits downloads a fresh copy"
    return _load_idx(cached, "trusted", source, fix)


def cache_dir() -> Path:
    """Where downloaded MNIST files are kept."""
    if os.environ.get("DIGITS_CACHE_DIR"):
        return Path(os.environ["DIGITS_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "digits" / "mnist"


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1], the input every model takes."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise ValueError(f"Expected uint8 images of shape (N, 28, 28), got {images.dtype} {images.shape}.")
    # Scale images to the [0, 1] range and add the single colour channel.
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]


# --- finding files ---------------------------------------------------------------------------------


def _candidate_names(part: str) -> list[str]:
    canonical = OFFICIAL[part].name  # "train-images-idx3-ubyte"; the other spelling is "train-images.idx3-ubyte"
    dotted = canonical.replace("-idx", ".idx")
    # Raw files first: they are read without decompressing.
    return [canonical, dotted, canonical + ".gz", dotted + ".gz"]


def _find_files(directory: Path) -> dict[str, Path]:
    found = {}
    for part in PARTS:
        for name in _candidate_names(part):
            if (directory / name).is_file():
                found[part] = directory / name
                break
    return found


def _require_all(found: dict[str, Path], directory: Path, fix: str) -> None:
    missing = [part for part in PARTS if part not in found]
    if missing:
        names = ", ".join(f"{PART_TITLES[part]} ({OFFICIAL[part].name}[.gz])" for part in missing)
        raise DataError(f"{directory} lacks the {names}; {fix}.")


def _load_explicit(path: Path, origin: str) -> Mnist:
    if origin == "DIGITS_DATA_DIR":
        label, default = f"DIGITS_DATA_DIR {path}", "unset DIGITS_DATA_DIR"
    else:
        label, default = f"directory {path}", "leave out `data_dir`"
    default += " to use the MNIST that ships with digits"
    if path.is_file() and path.suffix == ".npz":
        return _load_npz(path, f"{path.name} in {path.parent}")
    if not path.is_dir():
        raise DataError(f"The data directory {path} does not exist or is not a directory; check the path, "
                        f"or {default}.")
    found = _find_files(path)
    if len(found) < len(PARTS) and (path / NPZ_NAME).is_file():
        return _load_npz(path / NPZ_NAME, f"{NPZ_NAME} in {path}")
    if not found:
        raise DataError(
            f"{path} holds no MNIST-style data: put the four IDX files there (train-images-idx3-ubyte, "
            f"train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, raw or .gz) or a "
            f"Keras {NPZ_NAME}, or {default}."
        )
    _require_all(found, path, f"copy the missing files there, or {default}")
    return _load_idx(found, "explicit", label, "replace it with a good copy")


# --- reading and checking ----------------------------------------------------------------------------


def _load_idx(files: dict[str, Path], trust: str, source: str, fix: str) -> Mnist:
    try:
        key = tuple((part, str(files[part].resolve()), files[part].stat().st_size, files[part].stat().st_mtime_ns)
                    for part in PARTS)
    except OSError as error:
        raise DataError(f"Cannot read the MNIST files ({error}); {fix}.") from None
    arrays, verified = _read_idx_set(key, trust, fix)
    return Mnist(**arrays, source=source, verified=verified)


@functools.lru_cache(maxsize=4)
def _read_idx_set(key: tuple, trust: str, fix: str) -> tuple[dict[str, np.ndarray], bool]:
    # Cached on the files' paths, sizes and modification times, so a second load costs nothing.
    arrays, digests, sizes, names = {}, {}, {}, {}
    for part, path_text, _, _ in key:
        path = Path(path_text)
        raw = _read_bytes(path, part, fix)
        arrays[part] = _parse_idx(raw, part, path, fix)
        digests[part], sizes[part], names[part] = hashlib.sha256(raw).hexdigest(), len(raw), str(path)
    _check_set(arrays, names, fix)
    return arrays, _verify(digests, sizes, names, trust, fix)


def _read_bytes(path: Path, part: str, fix: str) -> bytes:
    """The file's bytes, decompressed when it is gzip (recognised by its content, not its name).

    Never more than its IDX header announces (plus one byte, to notice a file longer than that) nor more
    than MAX_IDX_BYTES: a small .gz that inflates to gigabytes, or a huge sparse file, is refused unread.
    """
    try:
        with open(path, "rb") as file:
            compressed = file.read(2) == b"\x1f\x8b"
            file.seek(0)
            stream = gzip.GzipFile(fileobj=file, mode="rb") if compressed else file
            header = stream.read(_header_bytes(part))
            limit = _announced_bytes(header, part)
            if limit is not None and limit > MAX_IDX_BYTES:
                raise DataError(f"{path} announces {limit:,} bytes of data, more than the {MAX_IDX_BYTES:,} digits "
                                f"reads; it is not an MNIST-style file, so {fix}.")
            rest = stream.read((MAX_IDX_BYTES if limit is None else limit) + 1 - len(header))
    except EOFError:
        raise DataError(f"{path} is truncated: its gzip stream ends early; {fix}.") from None
    except (gzip.BadGzipFile, zlib.error) as error:
        raise DataError(f"{path} is damaged: its gzip data is corrupt ({error}); {fix}.") from None
    except OSError as error:
        raise DataError(f"Cannot read {path} ({error.strerror or error}); check its permissions, or {fix}.") from None
    return header + rest  # _parse_idx says what is wrong when the length differs from the header's.


def _header_bytes(part: str) -> int:
    return 4 + 4 * (3 if part.endswith("images") else 1)


def _announced_bytes(header: bytes, part: str) -> int | None:
    """The file length an IDX header announces, or None when the header is too short to say."""
    if len(header) < _header_bytes(part):
        return None
    shape = [int.from_bytes(header[4 + 4 * i: 8 + 4 * i], "big") for i in range((len(header) - 4) // 4)]
    return len(header) + int(np.prod(shape, dtype=np.int64))


def _parse_idx(raw: bytes, part: str, path: Path, fix: str) -> np.ndarray:
    is_images = part.endswith("images")
    expected_magic, dimensions = (IMAGE_MAGIC, 3) if is_images else (LABEL_MAGIC, 1)
    header_bytes = 4 + 4 * dimensions
    kind = "IDX image file" if is_images else "IDX label file"
    if len(raw) < header_bytes:
        raise DataError(f"{path} is truncated: it holds {len(raw)} bytes, fewer than the {header_bytes}-byte "
                        f"header of an {kind}; {fix}.")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        hint = ""
        if magic in (IMAGE_MAGIC, LABEL_MAGIC):
            hint = f" (it is an IDX {'image' if magic == IMAGE_MAGIC else 'label'} file: are the files swapped?)"
        raise DataError(f"{path} is not an {kind}: its magic number is 0x{magic:08X}, not 0x{expected_magic:08X}"
                        f"{hint}; {fix}.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dimensions))
    announced = header_bytes + int(np.prod(shape, dtype=np.int64))
    what = f"{shape[0]} images of {shape[1]}x{shape[2]}" if is_images else f"{shape[0]} labels"
    if len(raw) < announced:
        raise DataError(f"{path} is truncated: its header announces {what} ({announced:,} bytes) but it holds "
                        f"only {len(raw):,} bytes; {fix}.")
    if len(raw) > announced:
        raise DataError(f"{path} does not match its header: the header announces {what} ({announced:,} bytes) "
                        f"but the file holds {len(raw):,} bytes; {fix}.")
    if is_images and shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataError(f"{path} holds {shape[1]}x{shape[2]} images, but digits needs 28x28 images like MNIST's; "
                        f"resize the data set or {fix}.")
    # A view on the (immutable) bytes: no copy, and read-only, so the cached arrays cannot be changed by accident.
    return np.frombuffer(raw, dtype=np.uint8, offset=header_bytes).reshape(shape)


def _check_set(arrays: dict[str, np.ndarray], names: dict[str, str], fix: str) -> None:
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise DataError(f"{names[f'{split}_images']} holds {len(images)} images but {names[f'{split}_labels']} "
                            f"holds {len(labels)} labels, so they do not belong together; {fix}.")
        if len(images) == 0:
            raise DataError(f"{names[f'{split}_images']} holds no images; {fix}.")
        outside = np.flatnonzero(labels >= CLASSES)
        if outside.size:
            more = f" (and {outside.size - 1} more outside 0-9)" if outside.size > 1 else ""
            raise DataError(f"{names[f'{split}_labels']} holds label {labels[outside[0]]} at position {outside[0]}"
                            f"{more}, but digit labels must be 0-9; {fix}.")


def _verify(digests: dict[str, str], sizes: dict[str, int], names: dict[str, str], trust: str, fix: str) -> bool:
    mismatched = [part for part in PARTS if digests[part] != OFFICIAL[part].idx_sha256]
    if not mismatched:
        return True
    if trust == "explicit":
        # All four differ: another data set in MNIST's layout. Some differ: a damaged copy of MNIST,
        # unless a differing file has its own size (a deliberately different split, say).
        if len(mismatched) == len(PARTS):
            return False
        damaged = [part for part in mismatched if sizes[part] == OFFICIAL[part].idx_bytes]
        if not damaged:
            return False
        mismatched = damaged
    part = mismatched[0]
    raise DataError(f"{names[part]} fails the checksum check: its sha256 is {digests[part][:16]}… where the "
                    f"official MNIST {PART_TITLES[part]} have {OFFICIAL[part].idx_sha256[:16]}…, so it is damaged; "
                    f"{fix}.")


def _load_npz(path: Path, source: str) -> Mnist:
    fix = "replace it with a good copy of Keras's mnist.npz"
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {part: npz[key] for part, key in NPZ_KEYS.items() if key in npz.files}
    except Exception as error:  # np.load raises many types (zip, pickle, format errors) for a bad file.
        raise DataError(f"{path} is not a readable npz file ({error}); {fix}.") from None
    missing = [key for part, key in NPZ_KEYS.items() if part not in arrays]
    if missing:
        raise DataError(f"{path} lacks the arrays {', '.join(missing)} that a Keras-style mnist.npz holds; {fix}.")
    names = {part: f"{path}[{NPZ_KEYS[part]}]" for part in PARTS}
    digests, sizes = {}, {}
    for part, array in arrays.items():
        array = _npz_array(array, part, names[part], fix)
        arrays[part] = array
        # Hash the array as it would be written as IDX, so the npz is checked against the same values.
        header = (IMAGE_MAGIC if array.ndim == 3 else LABEL_MAGIC).to_bytes(4, "big") + b"".join(
            size.to_bytes(4, "big") for size in array.shape)
        digests[part] = hashlib.sha256(header + array.tobytes()).hexdigest()
        sizes[part] = len(header) + array.nbytes
    _check_set(arrays, names, fix)
    # Keras's own file is trusted by its checksum; any other npz by the checksums of its arrays.
    verified = _file_sha256(path) == NPZ_SHA256 or _verify(digests, sizes, names, "explicit", fix)
    return Mnist(**arrays, source=source, verified=verified)


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _npz_array(array: np.ndarray, part: str, name: str, fix: str) -> np.ndarray:
    want, want_text = ((IMAGE_SIDE, IMAGE_SIDE), "(N, 28, 28)") if part.endswith("images") else ((), "(N,)")
    if array.ndim != 1 + len(want) or array.shape[1:] != want or not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{name} is {array.dtype} of shape {array.shape}, not integers of shape {want_text}; {fix}.")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise DataError(f"{name} holds values outside 0-255; {fix}.")
    array = np.ascontiguousarray(array, dtype=np.uint8)
    array.flags.writeable = False
    return array


# --- downloading -------------------------------------------------------------------------------------


def _download(part: str, cache: Path) -> tuple[Path, str]:
    """Fetch one official .gz into the cache; returns its path and the URL that served it."""
    official = OFFICIAL[part]
    target = cache / (official.name + ".gz")
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"Cannot create the MNIST cache {cache} ({error.strerror or error}); set DIGITS_CACHE_DIR "
                        f"to a writable directory, or pass `data_dir`.") from None
    urls = [mirror.rstrip("/") + "/" + target.name for mirror in MIRRORS]
    try:
        return target, download.fetch(urls, target, official.gz_sha256, official.gz_bytes)
    except download.DownloadFailed as failed:
        raise DataError(f"Could not download {target.name} from any mirror ({failed}); check the network "
                        f"connection, or put the four MNIST files in a directory and pass it as `data_dir`.") from None
