"""A drawing sent as raw grey pixels: a binary PGM (`P5`), checked from its header alone, read without a decoder.

The draw-a-digit page sends its box this way: a short text header, `P5 width height 255`, then one byte of grey
per pixel, row by row. Checking it costs a look at the header and the body's length, so the server does that
before anything else, and reading it is a view on its bytes (no decompression, no colour conversion), where a PNG
of the same drawing costs its decoding and an RGBA-to-grey conversion. The same bytes are an ordinary PGM file
that Pillow reads, so `digits predict drawing.pgm` reads the same picture, and gets the same answer.
"""

from __future__ import annotations

import re

from PIL import Image

from digits.pictures.decode import ImageError, ImageTooLarge

# The media type a drawing is declared with (Netpbm's grey map).
DRAWING_TYPE = "image/x-portable-graymap"
# A drawing's sides are at most this many pixels (the page sends 280×140): 4 MB of grey at most.
MAX_DRAWING_SIDE = 2048
# The header: "P5", the width, the height and the largest grey value (255: one byte a pixel), separated by single
# whitespace characters, as the page writes it; comments and 16-bit grey are for files, read the ordinary way.
HEADER = re.compile(rb"P5\s(\d{1,6})\s(\d{1,6})\s255\s")
# How far into the body the header can reach (two sides of 6 digits and four separators).
HEADER_BYTES = 24


def drawing_size(data: bytes, name: str = "the drawing") -> tuple[int, int, int]:
    """The width, height and where the pixels start in the bytes of a drawing; ImageError (ImageTooLarge for
    sides over MAX_DRAWING_SIDE) with one sentence when the bytes are not a drawing of that size."""
    header = HEADER.match(data[:HEADER_BYTES])
    if header is None:
        raise ImageError(f"{name} is not a binary PGM: it must start with 'P5', its width, its height and "
                         f"255, each followed by one space or newline (send any other picture as a PNG or JPEG).")
    width, height = int(header[1]), int(header[2])
    if width < 1 or height < 1:
        raise ImageError(f"{name} declares {width}×{height} pixels; a drawing has at least one pixel a side.")
    if max(width, height) > MAX_DRAWING_SIDE:
        raise ImageTooLarge(f"{name} declares {width:,}×{height:,} pixels, more than the {MAX_DRAWING_SIDE:,} a side "
                            "a drawing may have; send a smaller drawing, or a photo as a PNG or JPEG file.")
    expected = width * height
    found = len(data) - header.end()
    if found != expected:
        raise ImageError(f"{name} declares {width}×{height} pixels, {expected:,} bytes of grey, but {found:,} bytes "
                         "follow its header; send exactly one byte a pixel.")
    return width, height, header.end()


def drawing_image(data: bytes, size: tuple[int, int, int]) -> Image.Image:
    """The picture in a drawing's bytes, whose `drawing_size` is `size`: an 8-bit grey image of its pixels."""
    width, height, start = size
    return Image.frombuffer("L", (width, height), data[start:], "raw", "L", 0, 1)
