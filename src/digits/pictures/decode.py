"""A user's picture → a 28×28 MNIST-style array (light ink on black, fitted in 20×20, centred by mass).

MNIST was made by fitting each digit into a 20×20 box keeping its aspect ratio (with anti-aliasing),
then translating it so that its centre of mass sits at the centre of a 28×28 field. A photo, a scan or a
drawing only looks like that after the same steps, so `prepare_image` does them in order (this module
reads the file and does step 1; `digits.pictures.prepare` does the rest):

1. flatten: EXIF orientation, transparency composited over a contrasting or paper-coloured background,
   colour reduced to the one grey axis that best separates ink from paper;
2. polarity: the border (the paper) is compared with the darkest and lightest ink, so both dark-on-light
   and light-on-dark pictures become light ink on black;
3. background: a large-scale estimate of the paper (opening + blur) is subtracted, which removes shadows
   and uneven lighting; a picture whose remaining contrast is tiny has no digit;
4. ink: an Otsu threshold finds the strokes; specks, far-away marks and the paper's edge are dropped;
   a small digit in a big picture is found again in the original pixels around it;
5. fit: crop to the ink, thicken strokes that would vanish at 20×20 and thin bold ones, shrink with
   area averaging so the longer side is 20 pixels, stretch the contrast so the strokes reach 255;
6. centre: place the digit in 28×28 so its centre of mass lands on (14, 14), as in MNIST.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from digits.errors import DigitsError

# Refuse pictures above 40 megapixels (a 7,700 × 5,200 photo) before decoding them: a decompression bomb
# of a few kilobytes would otherwise take gigabytes of memory.
MAX_PIXELS = 40_000_000
# Even uncompressed, 40 megapixels of RGBA is 160 MB; bigger files are not pictures we can read.
MAX_FILE_BYTES = 256_000_000

# Bigger pictures are shrunk to this side first (area averaging keeps thin strokes as grey ink).
WORK_SIDE = 512


class ImageError(DigitsError):
    """A picture that cannot be read: missing, empty, not an image, truncated, or too large."""


class ImageTooLarge(ImageError):
    """A picture with more pixels, bytes or memory than `digits` reads (the server answers 413)."""


class NoDigitError(ImageError):
    """A readable picture with no ink on it: blank, uniform, or only noise."""


def source_name(source: str | Path | bytes, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "the uploaded image"
    return str(source)


def load_image(source: str | Path | bytes, *, name: str | None = None) -> Image.Image:
    """Open a picture file (or its bytes) safely and return it decoded, upright, first frame only.

    Raises ImageError with one sentence naming the file for a missing path, an empty file, something
    that is not an image, a truncated image, or one above MAX_PIXELS (checked from the header, before
    the pixels are decoded).
    """
    label = source_name(source, name)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageError(f"{label} is empty (0 bytes); send a PNG, JPEG, BMP, GIF, TIFF or WebP picture.")
        if len(data) > MAX_FILE_BYTES:
            raise ImageTooLarge(f"{label} is more than {MAX_FILE_BYTES / 1e6:.0f} MB; send a smaller picture.")
        stream = io.BytesIO(data)
    else:
        path = Path(source)
        try:
            exists = path.exists()
        except (OSError, ValueError):  # A name too long for the file system, or with a NUL byte in it.
            exists = False
        if not exists:
            raise ImageError(f"{label} does not exist; check the path.")
        if path.is_dir():
            raise ImageError(f"{label} is a directory, not an image file.")
        if not path.is_file():
            raise ImageError(f"{label} is not a regular file (a device or a pipe); give an image file.")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ImageTooLarge(
                f"{label} is {path.stat().st_size / 1e6:.0f} MB, more than the {MAX_FILE_BYTES / 1e6:.0f} MB "
                "limit for a picture; shrink it before reading a digit from it."
            )
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ImageError(f"{label} cannot be read ({error.strerror or error}); check its permissions.") from None
        if not data:
            raise ImageError(f"{label} is an empty file (0 bytes); it holds no picture.")
        stream = io.BytesIO(data)

    # Pillow's own bomb guard only warns below twice its limit; ours refuses from the header alone. Pillow
    # also checks the pictures a container holds (an ICO's PNG) against its limit, so that is ours too.
    with warnings.catch_warnings(), _pillow_pixel_limit(2 * MAX_PIXELS):
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image: Image.Image = Image.open(stream)
        except Image.DecompressionBombError:
            raise _too_large(label, None) from None
        except MemoryError:
            raise  # Not the file's fault alone: the caller says how much memory a picture may take.
        # Pillow's readers fail in their own ways on a damaged file: AVIF's RuntimeError, DDS's
        # NotImplementedError, SPIDER's AttributeError. Whatever a reader raises, the file is unreadable.
        except Exception:
            raise ImageError(
                f"{label} is not an image that can be read; use a PNG, JPEG, BMP, GIF, TIFF or WebP file."
            ) from None
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise _too_large(label, (width, height))
        if width < 1 or height < 1:
            raise ImageError(f"{label} has no pixels ({width}×{height}); it holds no picture.")
        try:
            # Large JPEGs decode at a reduced scale straight away: the digit needs far fewer pixels.
            image.draft(image.mode, (2 * WORK_SIDE, 2 * WORK_SIDE))
            with _pillow_pixel_limit(MAX_PIXELS):  # A picture inside this one (an ICO's PNG) is held to ours.
                image.load()
            image = ImageOps.exif_transpose(image)
        except Image.DecompressionBombError:
            raise _too_large(label, (width, height)) from None
        except MemoryError:
            raise
        except Exception:  # Any decoder's failure on damaged pixel data (see opening, above).
            raise ImageError(
                f"{label} is truncated or corrupted and cannot be decoded; save or export it again."
            ) from None
    return image


def _too_large(label: str, size: tuple[int, int] | None) -> ImageTooLarge:
    limit = f"{MAX_PIXELS:,} pixels"
    if size is None:
        return ImageTooLarge(f"{label} has more than the {limit} digits reads; "
                             "shrink it before reading a digit from it.")
    width, height = size
    return ImageTooLarge(
        f"{label} is {width:,}×{height:,} = {width * height:,} pixels, more than the {limit} digits reads; "
        "shrink it before reading a digit from it."
    )


@contextlib.contextmanager
def _pillow_pixel_limit(pixels: int):
    """Make Pillow refuse, with DecompressionBombError, any picture above `pixels` while reading one.

    Opening allows twice our limit, so that a picture just over it is refused by our check with its size.
    """
    # Pillow warns above MAX_IMAGE_PIXELS and refuses above twice it.
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, pixels // 2
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


# --- 1. flatten --------------------------------------------------------------------------------------


def to_grey(image: Image.Image, label: str = "the picture") -> np.ndarray:
    """Shrink to WORK_SIDE, composite transparency, reduce colour to one grey channel in [0, 1]."""
    try:
        image = _plain_mode(image)
    except (ValueError, OSError):  # A mode Pillow decodes but cannot convert (its premultiplied "La", say).
        raise ImageError(f"{label} uses a colour mode ({image.mode}) that cannot be read; save it as an ordinary "
                         "PNG or JPEG.") from None
    if max(image.size) > WORK_SIDE:
        scale = WORK_SIDE / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BOX, reducing_gap=2.0)  # Area averaging keeps thin strokes.
    pixels = np.asarray(image, dtype=np.float32)
    if image.mode == "F" and not np.isfinite(pixels).all():
        # A floating-point TIFF can hold NaN or infinity, which no threshold can place.
        raise ImageError(f"{label} holds pixel values that are not numbers (NaN or infinity); export it again "
                         "as an 8- or 16-bit image.")
    if image.mode == "F":
        # 16-bit pictures arrive as 0–65535, floating-point ones usually as 0–1.
        brightest = float(pixels.max()) if pixels.size else 0.0
        pixels = pixels / (65535.0 if brightest > 255 else 255.0 if brightest > 1 else 1.0)
    else:
        pixels = pixels / 255.0
    if image.mode == "L":
        return pixels  # 0–255 over 255: within [0, 1] already (a drawing's grey pixels).
    if pixels.ndim == 2:
        return np.clip(pixels, 0.0, 1.0)
    if pixels.shape[2] == 4:
        pixels = _composite(pixels[..., :3], pixels[..., 3])
    return _colour_to_grey(pixels)


def _plain_mode(image: Image.Image) -> Image.Image:
    """Convert Pillow's many modes to one of L, F (16/32-bit grey), RGB or RGBA."""
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        return image.convert("F") if image.mode != "F" else image
    if image.mode == "1":
        return image.convert("L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        return image.convert("RGBA")
    if image.mode in ("L", "RGB"):
        return image
    return image.convert("RGB")


def _composite(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Flatten transparency onto the paper's colour, or onto a colour that contrasts with the ink.

    A picture that is mostly opaque has a paper: transparent margins take its colour. A picture that is
    mostly transparent is ink on nothing (a canvas drawing): the background is white for dark ink and
    black for light ink, so a black pen on a transparent canvas never becomes black on black.
    """
    if alpha.min() == 1.0:
        return colour  # Opaque everywhere (the page's canvas): nothing shows through.
    opaque = alpha > 0.5
    if not opaque.any():
        return np.ones_like(colour)  # Fully transparent: nothing drawn, which later reads as blank.
    opaque_colours = colour[opaque]
    opaque_colours = opaque_colours[:: max(1, len(opaque_colours) // 20000)]  # A sample gives the same median.
    if opaque.mean() >= 0.5:
        background = np.median(opaque_colours, axis=0)
    else:
        ink_luminance = float(np.median(opaque_colours @ np.array([0.299, 0.587, 0.114], np.float32)))
        background = np.full(3, 1.0 if ink_luminance < 0.5 else 0.0, np.float32)
    weight = alpha[..., None]
    return colour * weight + background * (1.0 - weight)


def _colour_to_grey(colour: np.ndarray) -> np.ndarray:
    """The grey channel where ink and paper differ most: luminance, or the colours' main axis.

    Red ink on green paper can have the same luminance; the principal axis of the pixel colours still
    separates them. Whichever grey image splits into two classes most clearly (Otsu) wins.
    """
    luminance = colour @ np.array([0.299, 0.587, 0.114], np.float32)
    red, green, blue = colour[..., 0], colour[..., 1], colour[..., 2]
    if np.array_equal(red, green) and np.array_equal(green, blue):
        return luminance  # Exactly grey (a canvas drawing in black and white), decided without the statistics below.
    samples = colour.reshape(-1, 3)[:: max(1, colour.shape[0] * colour.shape[1] // 20000)]
    if np.ptp(samples - samples.mean(axis=1, keepdims=True), axis=0).max() < 0.05:
        return luminance  # Grey pixels (R = G = B up to noise): the luminance is all there is.
    covariance = np.cov(samples, rowvar=False)
    if not np.all(np.isfinite(covariance)) or np.allclose(covariance, 0):
        return luminance
    axis = np.linalg.eigh(covariance)[1][:, -1].astype(np.float32)
    axis /= np.abs(axis).sum()
    projected = colour @ axis
    projected -= axis[axis < 0].sum()  # The axis maps [0, 1]³ into [0, 1].
    # A sample of one luminance (a flat patch with a few coloured pixels) correlates with nothing: NaN, no warning.
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = np.corrcoef(projected.ravel()[::7], luminance.ravel()[::7])[0, 1]
    if correlation < 0:
        projected = 1.0 - projected  # Keep dark ink dark, like the luminance.
    if otsu(projected)[1] > otsu(luminance)[1]:
        return np.clip(projected, 0.0, 1.0)
    return luminance


def otsu(values: np.ndarray, bins: int = 256) -> tuple[float, float]:
    """Otsu's threshold and the between-class variance it achieves (how clearly two classes split)."""
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-6:
        return low, 0.0
    scale = (bins - 1e-3) / (high - low)
    # The values at the minimum all fall in the first bin: counted, not binned, as most of a drawing's are (its
    # paper is exactly 0). The same counts, at 0.06 ms instead of 0.15 for the page's 280×140 drawing.
    flat = values.ravel()
    above = flat[flat != low]
    counts = np.bincount(((above - low) * scale).astype(np.intp), minlength=bins)[:bins]
    counts[0] += flat.size - above.size
    edges = low + np.arange(bins + 1) / scale
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(counts * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2 / weight_low[-1] ** 2
    best = int(np.argmax(between))
    return float(edges[best + 1]), float(between[best])


# --- 2. polarity -------------------------------------------------------------------------------------
