"""The draw-a-digit page end to end: the real server, a real headless Chromium, a mouse, a finger and a camera.

Set DIGITS_SCREENSHOT=docs/serve.png to refresh the README's screenshot while the tests run.
"""

import base64
import io
import itertools
import os
import re
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from conftest import draw_smiley

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)"
    ),
]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# One stroke per digit as fractions of a square as tall as the drawing box, with enough points for smooth moves.
SEVEN = [(0.28, 0.22), (0.72, 0.22), (0.45, 0.80)]
ONE = [(0.5, 0.18), (0.5, 0.82)]


@pytest.fixture(scope="module")
def server_url():
    """The real application under uvicorn on a free loopback port, in a thread of this process."""
    import uvicorn

    from digits.inference.classifier import load_classifier
    from digits.serving.app import create_app
    from digits.serving.process import open_listener

    listener = open_listener("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(load_classifier()), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)
    listener.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser, server_url):
    """Open the page in a fresh context; every request that would leave the server fails the test."""
    contexts, elsewhere = [], []

    def opener(**context_options):
        context = browser.new_context(**context_options)
        contexts.append(context)

        def only_this_server(route):
            if route.request.url.startswith(server_url):
                route.continue_()
            else:
                elsewhere.append(route.request.url)
                route.abort()

        context.route("**/*", only_this_server)
        page = context.new_page()
        page.goto(server_url + "/")
        expect(page.locator("#model-info")).to_contain_text("Model ")
        return page

    yield opener
    for context in contexts:
        context.close()
    assert not elsewhere, f"the page tried to reach other sites: {elsewhere}"


def stroke_points(stroke, steps_per_segment=12):
    points = []
    for (x0, y0), (x1, y1) in itertools.pairwise(stroke):
        points += [(x0 + (x1 - x0) * step / steps_per_segment, y0 + (y1 - y0) * step / steps_per_segment)
                   for step in range(steps_per_segment + 1)]
    return points


def square_points(page, stroke, square=None):
    """The stroke's points on the page, in a square as tall as the box: in its middle, or the `square`-th from the
    left, each 0.6 of a square right of the one before (digits written side by side)."""
    box = page.locator("#pad").bounding_box()
    side = box["height"]
    left = box["x"] + ((box["width"] - side) / 2 if square is None else 0.1 * side + 0.6 * side * square)
    return [(left + x * side, box["y"] + y * side) for x, y in stroke_points(stroke)]


def draw_with_mouse(page, stroke, square=None, *, lift=True):
    points = square_points(page, stroke, square)
    page.mouse.move(*points[0])
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*point)
    if lift:
        page.mouse.up()


def draw_with_finger(page, stroke):
    """A touch stroke through the Chrome DevTools protocol: touchstart, moves, touchend, as a phone sends."""
    points = square_points(page, stroke)
    devtools = page.context.new_cdp_session(page)
    for index, (x, y) in enumerate(points):
        kind = "touchStart" if index == 0 else "touchMove"
        devtools.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y}]})
    devtools.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def settled(page):
    """Wait for the page's final answer: while drawing it also shows live readings of half-drawn digits."""
    # Locator expectations poll without eval, which the page's Content-Security-Policy forbids.
    expect(page.locator("section.result")).to_have_attribute("aria-busy", "false", timeout=15_000)


def shown_digit(page, digit: int):
    settled(page)
    expect(page.locator("#digit")).to_have_text(str(digit), timeout=15_000)


def bar_percentages(page) -> list[float]:
    values = page.locator("#bars li .bar-value").all_inner_texts()
    assert len(values) == 10
    assert all(re.fullmatch(r"\d{1,3}\.\d %", value) for value in values), values
    return [float(value.split()[0]) for value in values]


def view_brightest_pixel(page) -> int:
    return page.evaluate(
        "Math.max(...document.getElementById('view').getContext('2d').getImageData(0, 0, 28, 28).data"
        ".filter((value, index) => index % 4 === 0))"
    )


def the_drawing_and_its_answer(page, server_url) -> tuple[bytes, dict]:
    """The picture the page sends for its drawing now (a PGM of its grey pixels), and the API's answer to it."""
    picture = page.evaluate("() => padPicture().then(({ body, type }) => ({ bytes: Array.from(body), type }))")
    assert picture["type"] == "image/x-portable-graymap"
    drawing = bytes(picture["bytes"])
    answer = httpx.post(server_url + "/predict", content=drawing, headers={"Content-Type": picture["type"]}).json()
    return drawing, answer


def test_drawing_a_seven_shows_seven_with_ten_bars_and_the_28x28_view(open_page, server_url, tmp_path):
    page = open_page(viewport={"width": 1000, "height": 760})
    sent_types = set()
    page.on("request", lambda request: request.url.endswith("/predict")
            and sent_types.add(request.headers.get("content-type")))
    draw_with_mouse(page, SEVEN)

    shown_digit(page, 7)
    percentages = bar_percentages(page)
    assert sum(percentages) == pytest.approx(100, abs=1.0)
    assert max(percentages) == percentages[7]
    assert page.locator("#bars li.top").get_attribute("data-digit") == "7"
    assert view_brightest_pixel(page) == 255
    assert page.locator("#message").is_hidden()

    # The page sends its drawing's grey pixels (a PGM), and shows what the API says about the very picture it sends,
    # which is what a PNG of those pixels (what the page sent before) gets.
    assert sent_types == {"image/x-portable-graymap"}
    drawing, answer = the_drawing_and_its_answer(page, server_url)
    assert drawing.startswith(b"P5\n280 140\n255\n") and len(drawing) == 15 + 280 * 140
    assert answer["digit"] == 7
    # Beside how sure it is, the page shows the detector's digit score, as the API gives it.
    assert answer["digit_score"] > 0.5
    assert page.locator("#confidence").inner_text() == (
        f"{answer['probability'] * 100:.1f} % sure · digit score {answer['digit_score']:.2f}")
    png = io.BytesIO()
    Image.frombytes("L", (280, 140), drawing[15:]).convert("RGBA").save(png, "PNG")
    from_png = httpx.post(server_url + "/predict", content=png.getvalue(), headers={"Content-Type": "image/png"})
    assert from_png.json()["view"] == answer["view"]
    assert from_png.json()["probability"] == pytest.approx(answer["probability"], abs=1e-6)

    page.screenshot(path=str(tmp_path / "seven.png"))
    if os.environ.get("DIGITS_SCREENSHOT"):
        page.screenshot(path=os.environ["DIGITS_SCREENSHOT"], full_page=True)


def test_clear_empties_the_square_and_the_answer(open_page):
    page = open_page()
    draw_with_mouse(page, ONE)
    shown_digit(page, 1)

    page.get_by_role("button", name="Clear").click()

    assert page.locator("#digit").inner_text() == "?"
    assert page.locator("#bars li .bar-value").all_inner_texts() == ["–"] * 10
    all_paper = page.evaluate(
        "document.getElementById('pad').getContext('2d').getImageData(0, 0, 280, 280)"
        ".data.every(value => value === 255)"
    )
    assert all_paper


def test_a_chosen_file_is_read(open_page, digit_png, tmp_path):
    picture = tmp_path / "one.png"
    picture.write_bytes(digit_png(1, side=600, dark_on_light=False))
    page = open_page()

    page.set_input_files("#file", str(picture))

    shown_digit(page, 1)
    assert len(bar_percentages(page)) == 10


def test_a_smiley_is_gently_called_no_digit_with_the_best_guess(open_page, tmp_path):
    smiley = draw_smiley()
    smiley.save(tmp_path / "smiley.png")
    page = open_page()

    page.set_input_files("#file", str(tmp_path / "smiley.png"))

    expect(page.locator("#confidence")).to_have_text(
        re.compile(r"This doesn't look like a digit \(digit score 0\.0\d\)\. Best guess: \d \(\d{1,3}\.\d %\)\."),
        timeout=15_000)
    expect(page.locator("#digit")).to_have_class(re.compile(r"\bmuted\b"))
    assert len(bar_percentages(page)) == 10


def test_a_dropped_file_is_read(open_page, digit_png):
    page = open_page()
    png = base64.b64encode(digit_png(7, side=360)).decode()
    dropped = page.evaluate_handle(
        """(png) => {
            const bytes = Uint8Array.from(atob(png), (character) => character.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "seven.png", { type: "image/png" }));
            return transfer;
        }""",
        png,
    )

    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": dropped})

    shown_digit(page, 7)


def test_a_blank_file_says_no_digit_was_found(open_page, digit_png, tmp_path):
    picture = tmp_path / "blank.png"
    picture.write_bytes(digit_png(None))
    page = open_page()

    page.set_input_files("#file", str(picture))

    message = page.locator("#message")
    message.wait_for(state="visible")
    assert "No digit found" in message.inner_text()
    assert page.locator("#digit").inner_text() == "?"


def test_a_finger_draws_on_a_phone_sized_screen(open_page):
    page = open_page(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True, device_scale_factor=2)

    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # Nothing sticks out sideways.
    pad = page.locator("#pad").bounding_box()
    assert pad["width"] >= 280 and pad["x"] >= 0 and pad["x"] + pad["width"] <= 390

    draw_with_finger(page, ONE)

    shown_digit(page, 1)
    assert page.evaluate("window.scrollY") == 0  # The finger drew instead of scrolling.


def number_picture(number: str, path: Path) -> Path:
    """A picture of `number` typed in a system font, dark on light, 3:1."""
    from digits.data.numbers import compose_number, ink_picture, mask_glyph
    from digits.data.synthetic import find_fonts, render_glyph

    glyphs = [mask_glyph(render_glyph(find_fonts()[0], digit, 90)) for digit in number]
    ink_picture(compose_number(glyphs, [20] * (len(number) - 1), margin=60)[0]).save(path)
    return path


def shown_number(page, number: str):
    settled(page)
    expect(page.locator("#digit")).to_have_text(number, timeout=15_000)
    expect(page.locator("#readings li strong")).to_have_text(list(number))


def test_a_number_written_in_the_wide_box_is_read_with_each_digits_box_and_reading(open_page, server_url):
    page = open_page(viewport={"width": 1000, "height": 760})
    draw_with_mouse(page, SEVEN, 0)
    draw_with_mouse(page, ONE, 1)
    # The third digit's first stroke, its bar, with the pen still down: no digit yet, and the page says so gently.
    draw_with_mouse(page, SEVEN[:2], 2, lift=False)
    expect(page.locator("#confidence")).to_have_text(
        re.compile(r"Still drawing… best guess so far: \d+ \(\d{1,3}\.\d %\)\."), timeout=15_000
    )
    expect(page.locator("section.result")).to_have_attribute("aria-busy", "true")
    for point in square_points(page, SEVEN[1:], 2):
        page.mouse.move(*point)
    page.mouse.up()

    shown_number(page, "717")
    # Once settled, the page shows the answer to the whole drawing.
    _, answer = the_drawing_and_its_answer(page, server_url)
    assert answer["number"] == "717" and answer["verdict"] == "number"
    assert page.locator("#confidence").inner_text() == (
        f"{answer['probability'] * 100:.1f} % sure · digit score {answer['digit_score']:.2f}")
    assert page.locator("#bars li .bar-value").all_inner_texts() == ["–"] * 10  # The bars are one digit's.
    # Three boxes drawn over the drawing: red pixels on the overlay, in three separate runs of columns.
    red_columns = page.evaluate(
        """() => {
            const boxes = document.getElementById("boxes");
            const data = boxes.getContext("2d").getImageData(0, 0, boxes.width, boxes.height).data;
            const columns = new Array(boxes.width).fill(false);
            for (let index = 0; index < data.length; index += 4)
                if (data[index] > 150 && data[index + 3] > 0) columns[(index / 4) % boxes.width] = true;
            return columns;
        }"""
    )
    runs = sum(1 for before, now in itertools.pairwise([False, *red_columns]) if now and not before)
    assert runs == 3


def test_an_uploaded_photo_of_a_number_is_read(open_page, tmp_path):
    page = open_page()
    page.get_by_text("Upload a photo").wait_for()
    page.set_input_files("#file", str(number_picture("2026", tmp_path / "year.png")))

    shown_number(page, "2026")


def write_y4m(picture_path: Path, path: Path) -> Path:
    """The picture as a Y4M video Chromium's fake camera plays: 640×480 grey frames (4:2:0, neutral colour)."""
    from PIL import Image

    frame = Image.open(picture_path).convert("L")
    frame.thumbnail((600, 440))
    canvas = Image.new("L", (640, 480), 255)
    canvas.paste(frame, ((640 - frame.width) // 2, (480 - frame.height) // 2))
    luma = canvas.tobytes()
    chroma = bytes([128]) * (320 * 240)
    with open(path, "wb") as video:
        video.write(b"YUV4MPEG2 W640 H480 F10:1 Ip A1:1 C420jpeg\n")
        for _ in range(3):
            video.write(b"FRAME\n" + luma + chroma + chroma)
    return path


def test_the_camera_takes_a_frame_and_reads_the_number(browser, server_url, tmp_path):
    video = write_y4m(number_picture("314", tmp_path / "number.png"), tmp_path / "number.y4m")
    camera_args = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                   f"--use-file-for-fake-video-capture={video}"]
    # A second Chromium, whose fake camera plays the video (the other tests' browser has no camera).
    chromium = browser.browser_type.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + camera_args)
    try:
        page = chromium.new_page()
        page.goto(server_url + "/")
        expect(page.get_by_role("button", name="Take the picture")).to_be_hidden()  # No camera yet.
        page.get_by_role("button", name="Camera").click()
        expect(page.locator("#camera-view")).to_be_visible()
        # The button is enabled once the camera's first frame has arrived; the click waits for that.
        page.get_by_role("button", name="Take the picture").click(timeout=15_000)

        shown_number(page, "314")
        expect(page.locator("#camera-view")).to_be_hidden()  # The camera is let go once the frame is taken.
    finally:
        chromium.close()
