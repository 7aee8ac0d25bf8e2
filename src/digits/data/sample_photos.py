"""Real pictures that no generator drew, found offline in installed packages: they only ever measure.

The not-a-digit detector never trains on them, no method is chosen and no threshold set with them
(benchmarks/not_a_digit.py --real measures with them; docs/inference.md says which). They are what a user
might send instead of a digit:

  china.jpg, flower.jpg       scikit-learn's sample photographs (`sklearn.datasets.load_sample_images`)
  grace_hopper.jpg            matplotlib's sample photograph (matplotlib.get_data_path()/sample_data)
  a present                   matplotlib's clip-art gift box (Minduka_Present_Blue_Pack.png)
  a brain scan                matplotlib's MRI slice (s1045.ima.gz, 256 × 256, 16 bits)
  terrain                     matplotlib's elevation maps (jacksboro_fault_dem.npz, topobathy.npz), as grey pictures

Two sets are cut from them: `object_pictures`, each picture whole and zoomed in on its middle and quarters (what
a photo of an object is), and `photo_patches`, a grid of square patches of seven sizes (what a stray crop of a
photo is).

With scikit-image installed (the test and bench extras), more are measured, apart from those, so that their
figures stay comparable from one round to the next: `scikit_image_photos`, the nineteen real pictures scikit-image
bundles (SCIKIT_IMAGE_PICTURES: photographs, micrographs, a telescope's field, a printed page, textures of brick,
grass and gravel, a logo), cut into the same two sets; `faces`, its 200 small photographs of faces; and
`printed_letters`, the letters of its photographed printed page, each cut out on its own.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

# Patch sides, in pixels of the original picture: from a digit-sized 32 to most of a picture.
PATCH_SIDES = (32, 48, 64, 96, 128, 192, 256)
# At most this many patches of one side from one picture (an even spread over its grid), so no picture dominates.
PATCHES_PER_SIDE = 24
# The pictures scikit-image bundles that a camera, microscope or scanner took, or a person drew. Left out: `text`
# (among its handwritten marks are a 1 and a 5), `cat` (the same photograph as `chelsea`), and those a program
# drew (`checkerboard`, `binary_blobs`, `shepp_logan_phantom`, `colorwheel`). The others need a download.
SCIKIT_IMAGE_PICTURES = ("astronaut", "camera", "coins", "moon", "horse", "clock", "coffee", "rocket", "chelsea",
                         "hubble_deep_field", "immunohistochemistry", "brick", "grass", "gravel", "cell", "retina",
                         "logo", "page", "microaneurysms")
# The printed page's letters are 7 to 30 pixels tall (`printed_letters`); smaller marks are dots and commas.
LETTER_HEIGHTS = (7, 30)


def sample_photos() -> dict[str, Image.Image]:
    """name → picture, for each real picture found on this machine (missing packages or files are skipped)."""
    pictures: dict[str, Image.Image] = {}
    try:
        from sklearn.datasets import load_sample_images

        for name, image in zip(load_sample_images().filenames, load_sample_images().images, strict=True):
            pictures[Path(name).name] = Image.fromarray(image)
    except (ImportError, OSError):
        pass
    try:
        import matplotlib

        folder = Path(matplotlib.get_data_path()) / "sample_data"
    except ImportError:
        return pictures
    readers = {"grace_hopper.jpg": lambda path: Image.open(path).convert("RGB"),
               "Minduka_Present_Blue_Pack.png": lambda path: Image.open(path).convert("RGBA"),
               "s1045.ima.gz": _brain_scan,
               "jacksboro_fault_dem.npz": lambda path: _grey(np.load(path)["elevation"]),
               "topobathy.npz": lambda path: _grey(np.load(path)["topo"])}
    for name, read in readers.items():
        try:
            pictures[name] = read(folder / name)
        except (OSError, ValueError, KeyError):
            continue
    return pictures


def scikit_image_photos() -> dict[str, Image.Image]:
    """name → picture, for each of SCIKIT_IMAGE_PICTURES (empty without scikit-image)."""
    try:
        import skimage.data
    except ImportError:
        return {}
    pictures = {}
    for name in SCIKIT_IMAGE_PICTURES:
        try:
            image = getattr(skimage.data, name)()
        except (AttributeError, ImportError, OSError, ValueError):
            continue  # Another scikit-image version may not bundle it.
        pictures[name] = Image.fromarray(image.astype(np.uint8) * 255 if image.dtype == bool else image)
    return pictures


def faces() -> list[Image.Image]:
    """scikit-image's 200 grey photographs of faces, 25 × 25 pixels (a subset of Labeled Faces in the Wild); empty
    without scikit-image."""
    try:
        import skimage.data

        images = skimage.data.lfw_subset()  # Floats in [0, 1].
    except (AttributeError, ImportError, OSError, ValueError):
        return []
    return [Image.fromarray((image * 255).round().astype(np.uint8)) for image in images]


def printed_letters() -> list[Image.Image]:
    """The letters of scikit-image's photograph of a printed page (`page`), each on its own paper: every dark mark
    LETTER_HEIGHTS tall, in a square 1.6 times its size, the other marks in that square replaced by the paper; empty
    without scikit-image. Letters that touch in print come as one mark (et, fi, rn); a few look like digits (g, o,
    l, s).
    """
    try:
        import skimage.data

        page = skimage.data.page().astype(np.float64)
    except (AttributeError, ImportError, OSError, ValueError):
        return []
    from scipy import ndimage

    # The page is lit unevenly: ink is what is darker than the paper around it (a median over 25 pixels).
    paper = ndimage.median_filter(page, size=25)
    marks, _ = ndimage.label(page < paper - 30, structure=np.ones((3, 3)))
    letters = []
    for number, box in enumerate(ndimage.find_objects(marks), start=1):
        height, width = box[0].stop - box[0].start, box[1].stop - box[1].start
        if not (LETTER_HEIGHTS[0] <= height <= LETTER_HEIGHTS[1] and width <= LETTER_HEIGHTS[1]):
            continue  # Dots, dashes and lines are no letters.
        side = int(max(height, width) * 1.6) + 4
        top = (box[0].start + box[0].stop - side) // 2
        left = (box[1].start + box[1].stop - side) // 2
        if top < 0 or left < 0 or top + side > page.shape[0] or left + side > page.shape[1]:
            continue  # Cut by the page's edge.
        own = ndimage.binary_dilation(marks == number)
        alone = np.where(own, page, paper)[top:top + side, left:left + side]
        letters.append(Image.fromarray(alone.clip(0, 255).astype(np.uint8)))
    return letters


def _brain_scan(path: Path) -> Image.Image:
    with gzip.open(path) as stream:
        raw = stream.read(256 * 256 * 2 + 1)
    return _grey(np.frombuffer(raw, np.uint16).reshape(256, 256))


def _grey(values: np.ndarray) -> Image.Image:
    """Any 2-D array as an 8-bit grey picture spanning its range."""
    values = np.asarray(values, np.float64)
    span = max(float(np.ptp(values)), 1e-12)
    return Image.fromarray(((values - values.min()) / span * 255).astype(np.uint8))


def object_pictures(photos: dict[str, Image.Image]) -> list[Image.Image]:
    """Each picture whole, its middle half, and each of its four quarters: 6 per picture."""
    pictures = []
    for photo in photos.values():
        width, height = photo.size
        pictures.append(photo)
        pictures.append(photo.crop((width // 4, height // 4, 3 * width // 4, 3 * height // 4)))
        pictures += [photo.crop((left, top, left + width // 2, top + height // 2))
                     for left in (0, width // 2) for top in (0, height // 2)]
    return pictures


def photo_patches(photos: dict[str, Image.Image]) -> list[Image.Image]:
    """Square patches of each PATCH_SIDES side on a grid over each picture, at most PATCHES_PER_SIDE of each."""
    patches = []
    for photo in photos.values():
        width, height = photo.size
        for side in PATCH_SIDES:
            corners = [(left, top) for top in range(0, height - side + 1, side // 2)
                       for left in range(0, width - side + 1, side // 2)]
            if not corners:
                continue
            chosen = np.linspace(0, len(corners) - 1, min(PATCHES_PER_SIDE, len(corners))).round().astype(int)
            patches += [photo.crop((corners[index][0], corners[index][1], corners[index][0] + side,
                                    corners[index][1] + side)) for index in sorted(set(chosen))]
    return patches
