"""Reading a detector file (`not_a_digit.npz`) within bounds: a damaged or foreign file is one DigitsError.

The file is what `DigitDetector.save` writes (`digits.inference.not_a_digit`): plain .npy members in a zip,
never pickled. It comes from a run folder a user may have been sent, so nothing in it is trusted: its size, each
member's declared and inflated size, each array's declared shape, and how the arrays fit together are checked
before any of them is used.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import fields
from pathlib import Path

import numpy as np

from digits.errors import DigitsError
from digits.inference.not_a_digit import DENSITY_INPUTS, REFIT, DigitDetector

# The shipped detector is 8.6 MB (its whitenings, 1152 × 1152 and the grids' 864 × 864 float32, are most of it), a
# briefly trained run's 13.4 MB (tests/test_calibration.py); a file, or a member of it, above this is not a detector
# digits wrote.
MAX_DETECTOR_BYTES = 32 * 2**20
# A detector saved before the class density has only these members.
REQUIRED_ARRAYS = ("hidden_weights", "hidden_bias", "output_weights", "output_bias")


def load_detector(path: str | Path) -> DigitDetector:
    """A detector saved by `DigitDetector.save`, checked; a damaged or foreign file is one DigitsError.

    Memory stays bounded whatever the file claims: it must be a regular file of at most MAX_DETECTOR_BYTES
    (`read_bounded`), each member's declared size is checked before it is inflated and at most that much is
    inflated, and each array's declared shape must fit in the member that holds it before it is allocated.
    """
    from digits.training.file_access import read_bounded

    try:
        data = read_bounded(Path(path), MAX_DETECTOR_BYTES)
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = set(archive.namelist())
            arrays = {field_.name: np.asarray(_read_array(archive, field_.name + ".npy"), np.float64)
                      for field_ in fields(DigitDetector)
                      if field_.name in REQUIRED_ARRAYS or field_.name + ".npy" in members}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        # read_bounded and _read_array say why in words; the libraries' own messages mean little to a user.
        reason = str(error) if str(error).startswith(("it is", "its member")) else type(error).__name__
        raise DigitsError(f"Cannot read the not-a-digit detector {path} ({reason}); {REFIT}") from None
    if not _consistent(arrays):
        raise DigitsError(f"The not-a-digit detector {path} holds arrays of the wrong shapes or non-finite "
                          f"numbers; {REFIT}")
    return DigitDetector(**arrays)


def _consistent(arrays: dict[str, np.ndarray]) -> bool:
    """Whether the arrays make one detector: shapes that fit together, and finite numbers."""
    hidden = arrays["hidden_weights"].shape
    if (len(hidden) != 2 or arrays["hidden_bias"].shape != hidden[1:] or arrays["output_weights"].shape
            != (hidden[1], 1) or arrays["output_bias"].shape != (1,)
            or not all(np.isfinite(array).all() for array in arrays.values())):
        return False
    density = [name for name in ("whitening", "whitened_means", "logit_weights", "logit_bias") if name in arrays]
    pooled = [name for name in ("pooled_whitening", "pooled_whitened_means") if name in arrays]
    if pooled and not all(arrays[name].size == 0 for name in pooled):
        return _consistent_layer_distances(arrays, density, pooled)
    if not density or all(arrays[name].size == 0 for name in density):
        return True
    feature_count = hidden[0] - DENSITY_INPUTS
    return len(density) == 4 and feature_count > 0 and (
        arrays["whitening"].shape == (feature_count, feature_count)
        and arrays["whitened_means"].ndim == 2 and arrays["whitened_means"].shape[1] == feature_count
        and arrays["logit_weights"].shape == (feature_count, arrays["whitened_means"].shape[0])
        and arrays["logit_bias"].shape == (arrays["whitened_means"].shape[0],))


def _consistent_layer_distances(arrays: dict[str, np.ndarray], density: list, pooled: list) -> bool:
    """Whether a layer-distances detector's arrays fit together (the basic shapes already checked)."""
    if len(density) != 4 or len(pooled) != 2 or arrays["whitening"].ndim != 2:
        return False
    feature_count, classes = arrays["whitening"].shape[0], arrays["logit_bias"].shape[0]
    pooled_count = arrays["pooled_whitening"].shape[0] if arrays["pooled_whitening"].ndim == 2 else 0
    grid = [name for name in ("grid_whitening", "grid_whitened_means", "grid_sizes") if name in arrays]
    grid_count, blocks = 0, 0
    if grid and not all(arrays[name].size == 0 for name in grid):
        if len(grid) != 3 or arrays["grid_whitening"].ndim != 2 or arrays["grid_sizes"].ndim != 1:
            return False
        grid_count, sizes = arrays["grid_whitening"].shape[0], arrays["grid_sizes"]
        blocks = len(sizes)
        if (np.any(sizes < 1) or np.any(sizes != np.round(sizes)) or sizes.sum() != grid_count
                or arrays["grid_whitening"].shape != (grid_count, grid_count)
                or arrays["grid_whitened_means"].shape != (classes, grid_count)):
            return False
    return feature_count > 0 and pooled_count > 0 and (
        arrays["whitening"].shape == (feature_count, feature_count)
        and arrays["whitened_means"].shape == (classes, feature_count)
        and arrays["logit_weights"].shape == (feature_count, classes)
        and arrays["pooled_whitening"].shape == (pooled_count, pooled_count)
        and arrays["pooled_whitened_means"].shape == (classes, pooled_count)
        and arrays["hidden_weights"].shape[0] == (3 + blocks) * classes + pooled_count)


def _read_array(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    """The .npy member `name` of an .npz archive, never inflating or allocating more than MAX_DETECTOR_BYTES."""
    member = archive.getinfo(name)
    if member.file_size > MAX_DETECTOR_BYTES:
        raise ValueError(f"its member {name} declares {member.file_size:,} bytes, more than a detector holds")
    with archive.open(member) as stream:
        content = stream.read(MAX_DETECTOR_BYTES + 1)
    if len(content) > MAX_DETECTOR_BYTES:
        raise ValueError(f"its member {name} inflates to more than a detector holds")
    buffer = io.BytesIO(content)
    version = np.lib.format.read_magic(buffer)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(buffer)
    if dtype.hasobject or int(np.prod(shape, dtype=object)) * dtype.itemsize > len(content) - buffer.tell():
        raise ValueError(f"its member {name} declares an array larger than the member")
    buffer.seek(0)
    return np.load(buffer, allow_pickle=False)
