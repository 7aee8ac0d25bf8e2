"""digits.pictures.decode: every preprocessing step on constructed pictures, and every kind of bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from digits.errors import DigitsError
from digits.pictures import prepare as ink
from digits.pictures.decode import MAX_PIXELS, ImageError, NoDigitError, load_image
from digits.pictures.prepare import is_dark_on_light, prepare_file, prepare_image

WHITE, BLACK = (255, 255, 255), (0, 0, 0)


def draw_seven(size=(300, 300), box=(100, 60, 200, 240), ink=BLACK, paper=WHITE, pen=14, mode="RGB"):
    """A pen-drawn 7 inside `box` (left, top, right, bottom) on a canvas of `size`."""
    picture = Image.new(mode, size, paper)
    left, top, right, bottom = box
    ImageDraw.Draw(picture).line(
        [(left, top), (right, top), (left + (right - left) * 0.35, bottom)], fill=ink, width=pen, joint="curve"
    )
    return picture


def ink_box(prepared: np.ndarray) -> tuple[int, int]:
    """Height and width of the ink's bounding box in a prepared 28x28 image."""
    rows, columns = np.nonzero(prepared > 0)
    return rows.max() - rows.min() + 1, columns.max() - columns.min() + 1


def similarity(first: np.ndarray, second: np.ndarray) -> float:
    """Correlation of two prepared images: 1 means the same picture."""
    return float(np.corrcoef(first.ravel().astype(float), second.ravel().astype(float))[0, 1])


REFERENCE = prepare_image(draw_seven())


def test_an_off_centre_digit_is_fitted_in_20_pixels_and_centred_by_mass():
    corner = draw_seven(size=(800, 600), box=(20, 30, 140, 250), pen=16)
    prepared = prepare_image(corner)
    assert prepared.shape == (28, 28) and prepared.dtype == np.uint8
    centre_row, centre_column = ndimage.center_of_mass(prepared.astype(float))
    assert abs(centre_row - 14) <= 0.6 and abs(centre_column - 14) <= 0.6
    height, width = ink_box(prepared)
    assert max(height, width) in (20, 21, 22)  # 20 pixels plus the anti-aliased edge.
    assert prepared.max() == 255 and prepared[:3].max() == 0 and prepared[-1].max() == 0
    assert similarity(prepared, REFERENCE) > 0.9


def test_the_aspect_ratio_is_kept():
    one = Image.new("L", (400, 400), 255)
    ImageDraw.Draw(one).line([(200, 50), (200, 350)], fill=0, width=20)
    height, width = ink_box(prepare_image(one))
    assert height >= 20 and width <= 6


@pytest.mark.parametrize(
    ("ink", "paper", "dark_on_light"),
    [
        (BLACK, WHITE, True),
        (WHITE, BLACK, False),
        ((30, 40, 160), (250, 240, 200), True),
        ((255, 230, 0), (20, 60, 20), False),
    ],
)
def test_polarity_is_detected_both_ways(ink, paper, dark_on_light):
    picture = draw_seven(ink=ink, paper=paper)
    assert is_dark_on_light(picture) is dark_on_light
    prepared = prepare_image(picture)
    # Either way the model sees light ink on black, the same 7.
    assert prepared[0, 0] == 0 and prepared.max() == 255
    assert similarity(prepared, REFERENCE) > 0.95


def test_ink_of_the_same_luminance_as_the_paper_is_still_found():
    red_on_green = draw_seven(ink=(200, 40, 40), paper=(60, 120, 60))
    assert similarity(prepare_image(red_on_green), REFERENCE) > 0.9


@pytest.mark.parametrize("ink", [(0, 0, 0, 255), (255, 255, 255, 255), (20, 80, 200, 255)])
def test_strokes_on_a_transparent_canvas_are_read_whatever_their_colour(ink):
    # A canvas drawing: ink on fully transparent pixels whose hidden colour is black.
    drawing = draw_seven(ink=ink, paper=(0, 0, 0, 0), mode="RGBA")
    assert similarity(prepare_image(drawing), REFERENCE) > 0.95


def test_a_transparent_margin_takes_the_paper_colour():
    picture = draw_seven(size=(300, 300)).convert("RGBA")
    margin = np.asarray(picture).copy()
    margin[:40, :, 3] = 0  # The hidden colour of the transparent strip is black.
    margin[:40, :, :3] = 0
    assert similarity(prepare_image(Image.fromarray(margin)), REFERENCE) > 0.95


def test_uneven_lighting_is_removed():
    picture = np.asarray(draw_seven().convert("L"), dtype=float)
    shadow = np.linspace(1.0, 0.35, picture.shape[1])[np.newaxis, :]  # The right side is in shadow.
    shaded = Image.fromarray((picture * shadow).astype(np.uint8))
    assert similarity(prepare_image(shaded), REFERENCE) > 0.95


def test_specks_and_noise_are_ignored():
    picture = draw_seven(size=(600, 600), box=(200, 160, 300, 340))
    draw = ImageDraw.Draw(picture)
    for corner in [(20, 20), (560, 40), (40, 560)]:
        draw.ellipse([corner, (corner[0] + 5, corner[1] + 5)], fill=BLACK)
    noise = np.random.default_rng(0).normal(0, 12, (600, 600, 1))
    noisy = Image.fromarray(np.clip(np.asarray(picture, dtype=float) + noise, 0, 255).astype(np.uint8))
    assert similarity(prepare_image(noisy), REFERENCE) > 0.9


def test_thin_strokes_survive_shrinking_from_a_large_picture():
    hairline = draw_seven(size=(3000, 3000), box=(1000, 700, 1800, 2300), pen=3)
    prepared = prepare_image(hairline)
    assert prepared.max() == 255
    assert (prepared > 128).sum() >= 40  # Strokes about 2 pixels wide, like MNIST, not a faint trace.
    assert similarity(prepared, REFERENCE) > 0.85


@pytest.mark.parametrize(
    "picture",
    [
        Image.new("RGB", (200, 200), WHITE),
        Image.new("L", (50, 80), 0),
        Image.new("RGBA", (280, 280), (0, 0, 0, 0)),
        Image.fromarray(np.random.default_rng(1).normal(128, 2, (300, 300)).clip(0, 255).astype(np.uint8)),
    ],
    ids=["white", "black", "transparent", "faint-noise"],
)
def test_a_blank_picture_has_no_digit(picture):
    with pytest.raises(NoDigitError, match="no digit found in drawing.png"):
        prepare_image(picture, name="drawing.png")


def test_no_digit_names_the_file(tmp_path):
    path = tmp_path / "blank.png"
    Image.new("L", (64, 64), 255).save(path)
    with pytest.raises(NoDigitError, match=f"no digit found in {path}"):
        prepare_file(path)


@pytest.mark.parametrize("extension", ["png", "jpg", "bmp", "gif", "tiff", "webp"])
def test_every_common_format_gives_the_same_digit(tmp_path, extension):
    path = tmp_path / f"seven.{extension}"
    draw_seven().save(path)
    assert similarity(prepare_file(path), REFERENCE) > 0.95


@pytest.mark.parametrize("mode", ["1", "L", "P", "LA", "I;16", "CMYK"])
def test_every_pixel_mode_is_handled(mode):
    picture = draw_seven()
    converted = picture.convert("L").convert(mode) if mode in ("1", "I;16") else picture.convert(mode)
    assert similarity(prepare_image(converted), REFERENCE) > 0.9


def test_a_palette_png_with_a_transparent_colour(tmp_path):
    path = tmp_path / "palette.png"
    drawing = draw_seven(ink=(0, 0, 0, 255), paper=(0, 0, 0, 0), mode="RGBA")
    drawing.convert("P").save(path, transparency=0)  # Black becomes transparent too: only ink from alpha.
    with Image.open(path) as reopened:
        assert reopened.mode == "P" and "transparency" in reopened.info
    prepared = prepare_file(path)
    # The seven's strokes are found through the transparency: bright ink over a fair part of the field.
    assert prepared.shape == (28, 28) and prepared.max() > 200 and 0.05 < (prepared > 127).mean() < 0.5


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "phone.jpg"
    # A phone stores the picture sideways and records "rotate 90° clockwise to view" (orientation 6).
    sideways = draw_seven().transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways.save(path, exif=exif)
    assert load_image(path).size == (300, 300)
    assert similarity(prepare_file(path), REFERENCE) > 0.95


def test_bytes_are_accepted():
    buffer = io.BytesIO()
    draw_seven().save(buffer, format="PNG")
    assert similarity(prepare_file(buffer.getvalue()), REFERENCE) > 0.99


# --- bad input: one clear sentence each, naming the file --------------------------------------------


def test_a_missing_path(tmp_path):
    with pytest.raises(ImageError, match=r"nothing\.png does not exist"):
        load_image(tmp_path / "nothing.png")


def test_an_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png is an empty file"):
        load_image(path)


def test_empty_bytes():
    with pytest.raises(ImageError, match="the uploaded image is empty"):
        load_image(b"")


def test_a_file_that_is_not_an_image(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("this is not a picture\n")
    with pytest.raises(ImageError, match=r"notes\.txt is not an image"):
        prepare_file(path)


def test_a_directory(tmp_path):
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)


@pytest.mark.parametrize("extension", ["png", "jpg"])
def test_a_truncated_image(tmp_path, extension):
    whole = tmp_path / f"whole.{extension}"
    noise = np.random.default_rng(2).integers(0, 255, (400, 400, 3), dtype=np.uint8)
    Image.fromarray(noise).save(whole)
    path = tmp_path / f"cut.{extension}"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ImageError, match=r"cut\.\w+ is truncated or corrupted"):
        prepare_file(path)


@pytest.mark.parametrize("side", [10000, 20000], ids=["over-our-limit", "over-pillows-bomb-limit"])
def test_an_enormous_image_is_refused_before_decoding(tmp_path, side):
    path = tmp_path / "huge.png"
    Image.new("1", (side, side // 2)).save(path)  # Kilobytes that decode to 50 or 200 megapixels.
    assert side * side // 2 > MAX_PIXELS
    with pytest.raises(ImageError, match=r"huge\.png (is .* pixels,|has) more than the 40,000,000 pixels digits reads"):
        load_image(path)


def test_every_image_error_is_a_digits_error():
    # The CLI and the web server turn DigitsError into one sentence; these must never escape as tracebacks.
    assert issubclass(ImageError, DigitsError) and issubclass(NoDigitError, ImageError)


# --- shortcuts for drawings on plain paper ------------------------------------------------------------


def canvas_greys(count: int = 30) -> list[np.ndarray]:
    """MNIST digits as the page sends them, dark ink on exactly white paper at 140 pixels, in [0, 1]."""
    from digits.data.mnist import load_mnist

    greys = []
    for image in load_mnist().test_images[:count]:
        canvas = Image.fromarray(255 - image).resize((140, 140), Image.Resampling.BILINEAR)
        greys.append(np.asarray(canvas, dtype=np.float32) / 255)
    return greys


def polarity_after_blurring(grey: np.ndarray) -> bool:
    """The polarity rule of `ink.paper_is_light`, always computed on the blurred picture."""
    frame = max(1, round(0.03 * min(grey.shape)))
    border = np.concatenate([grey[:frame], grey[-frame:], grey[:, :frame].T, grey[:, -frame:].T], axis=None)
    paper = float(np.median(border))
    smooth = ndimage.gaussian_filter(grey, 1.0, truncate=2.0)
    return (paper - float(smooth.min())) > (float(smooth.max()) - paper)


def test_paper_at_the_picture_extreme_decides_the_polarity_as_the_blur_does():
    white = np.ones((60, 60), np.float32)
    pictures = [*canvas_greys(10), *(1 - grey for grey in canvas_greys(10))]
    for depth in (0.005, 0.011, 0.02, 0.5):  # One dark or light pixel, just under and over the shortcut's 0.01.
        dot = white.copy()
        dot[30, 30] -= depth
        pictures += [dot, 1 - dot]
    # Grey paper with a darker dot and a lighter blob: only the blur says which ink stands out more.
    grey_paper = np.full((60, 60), 0.5, np.float32)
    grey_paper[20, 20] = 0.2
    grey_paper[39:42, 39:42] = 0.7
    pictures += [grey_paper, 1 - grey_paper]

    for grey in pictures:
        assert ink.paper_is_light(grey) == polarity_after_blurring(grey)


def test_ink_on_exactly_black_paper_keeps_every_value_and_a_faint_shadow_is_still_removed():
    for grey in canvas_greys(10):
        light_ink = 1 - grey  # The paper is exactly 0.
        np.testing.assert_array_equal(ink.remove_background(light_ink), light_ink)

    shadow = np.linspace(0.0, 0.05, 140, dtype=np.float32)[np.newaxis, :]  # Too faint to see, not zero.
    shaded = np.maximum(1 - canvas_greys(1)[0], shadow)
    residual = ink.remove_background(shaded)
    assert residual[:, -10:].max() < 0.5 * shadow.max()  # The right edge is paper again.
    assert residual.max() > 0.9  # The strokes stay.


def test_working_only_around_the_ink_finds_the_same_digit_as_working_on_the_whole_picture(monkeypatch):
    residuals = [1 - grey for grey in canvas_greys(20)]
    edge = np.zeros((140, 140), np.float32)
    edge[0:60, 0:6] = 1.0  # A stroke along the picture's edge (dropped) and a digit in a corner.
    edge[100:140, 110:118] = 1.0
    residuals.append(edge)
    hairline = np.zeros((140, 140), np.float32)
    hairline[30:110, 70] = np.linspace(0.5, 1.0, 80)  # One pixel wide: the blur reaches past it.
    residuals.append(hairline)
    cropped = [ink.find_ink(residual) for residual in residuals]

    def everywhere(values, margin):
        return slice(0, values.shape[0]), slice(0, values.shape[1])

    monkeypatch.setattr(ink, "_nonzero_box", everywhere)
    whole = [ink.find_ink(residual) for residual in residuals]

    for (cropped_ink, cropped_box), (whole_ink, whole_box) in zip(cropped, whole, strict=True):
        assert cropped_box == whole_box
        np.testing.assert_array_equal(cropped_ink, whole_ink)


def test_a_drawing_in_one_mark_gets_the_layout_it_gets_when_its_marks_are_grouped_again(monkeypatch):
    from digits.pictures import segment

    drawings = [Image.fromarray(np.round(grey * 255).astype(np.uint8)) for grey in canvas_greys(30)]
    broken = np.full((140, 140), 255, np.uint8)
    broken[20:120, 60:66] = 17
    broken[68:71, 60:66] = 255  # A stroke broken by 3 pixels: two marks a pixel apart, one mark further apart.
    drawings.append(Image.fromarray(broken))
    one_mark = []
    real_pieces = segment._pieces

    def recording_pieces(residual):
        pieces = real_pieces(residual)
        one_mark.append(pieces is not None and pieces[3] is not None)
        return pieces

    monkeypatch.setattr(segment, "_pieces", recording_pieces)
    shortcut = [segment.find_digits(drawing) for drawing in drawings]
    # The same pictures, every mark grouped again by `find_ink`, as before the shortcut.
    monkeypatch.setattr(segment, "_pieces", lambda residual: (*real_pieces(residual)[:3], None))
    regrouped = [segment.find_digits(drawing) for drawing in drawings]

    assert sum(one_mark) >= 25 and not one_mark[-1]  # The shortcut was taken, but not for the broken stroke.
    for fast, slow in zip(shortcut, regrouped, strict=True):
        assert [candidate.box for candidate in fast.candidates] == [candidate.box for candidate in slow.candidates]
        np.testing.assert_array_equal(fast.views, slow.views)


def test_the_page_s_opaque_colour_canvas_reads_like_the_same_drawing_in_greyscale():
    for grey in canvas_greys(20):
        drawing = Image.fromarray(np.round(grey * 255).astype(np.uint8))  # Mode L.
        greyscale = prepare_image(drawing)
        # The page sends RGBA, opaque, ink and paper grey: the colour shortcuts must not change the view.
        np.testing.assert_array_equal(prepare_image(drawing.convert("RGB")), greyscale)
        np.testing.assert_array_equal(prepare_image(drawing.convert("RGBA")), greyscale)


def test_the_numpy_mask_filters_give_what_scipy_s_give():
    # The fast dilation and erosion on the common path must keep every view as SciPy's filters made it.
    generator = np.random.default_rng(0)
    for _ in range(300):
        shape = tuple(int(side) for side in generator.integers(1, 40, 2))
        mask = generator.random(shape) < generator.random()
        reach = int(generator.integers(1, 6))
        np.testing.assert_array_equal(ink._dilate(mask, reach),
                                      ndimage.maximum_filter(mask.view(np.uint8), size=2 * reach + 1) > 0)
        np.testing.assert_array_equal(ink._erode_cross(mask), ndimage.binary_erosion(mask))


def test_a_flat_colour_picture_with_a_few_coloured_pixels_is_refused_without_a_numpy_warning(recwarn):
    # Its luminance, sampled every 7th pixel, is one value: the colour axis correlates with nothing (NaN).
    picture = np.full((48, 48, 3), (200, 40, 40), np.uint8)
    picture[10, 11], picture[30, 33], picture[40, 2] = (20, 200, 20), (20, 20, 200), (250, 250, 250)
    with pytest.raises(NoDigitError, match="blank or has too little contrast"):
        prepare_image(Image.fromarray(picture))
    assert not [warning for warning in recwarn if issubclass(warning.category, RuntimeWarning)]
