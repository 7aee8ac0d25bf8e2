"""Pictures an attacker would send: small files that cost a reader much memory or CPU time.

Shared by the hardening tests and `benchmarks/abuse.py`. Each function returns the file's bytes; the
sizes are parameters so that tests stay quick while the benchmark uses the sizes of the original report.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def blank_png(width: int, height: int) -> bytes:
    """A grey PNG of width × height black pixels, compressed to almost nothing (a decompression bomb)."""
    compressor, parts = zlib.compressobj(9), []
    row = b"\0" * (width + 1)  # The filter byte, then one byte per pixel.
    for _ in range(height):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", b"".join(parts))
            + png_chunk(b"IEND", b""))


def ico_holding_png(side: int) -> bytes:
    """An ICO whose directory says 256×256 but whose one image is a side × side PNG."""
    png = blank_png(side, side)
    directory = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 6 + 16)
    return directory + entry + png


def png_with_many_chunks(count: int) -> bytes:
    """A small valid PNG preceded by `count` tiny private chunks that a reader walks through one by one."""
    picture = io.BytesIO()
    Image.new("L", (28, 28), 255).save(picture, "PNG")
    data = picture.getvalue()
    signature, rest = data[:8], data[8:]
    header_end = 8 + 4 + 4 + 13 + 4  # The signature, then the IHDR chunk, which must come first.
    filler = png_chunk(b"prVt", b"") * count
    return signature + rest[: header_end - 8] + filler + rest[header_end - 8 :]


def tiff_with_many_strips(count: int) -> bytes:
    """A 1-pixel-wide grey TIFF of `count` rows, each row its own strip: huge tag arrays for the reader."""
    offsets_at = 8 + 2 + 7 * 12 + 4
    counts_at = offsets_at + 4 * count
    pixels_at = counts_at + 4 * count
    tags = [
        (256, 4, 1, 1),  # ImageWidth
        (257, 4, 1, count),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (262, 3, 1, 1),  # PhotometricInterpretation: black is zero
        (273, 4, count, offsets_at),  # StripOffsets
        (278, 4, 1, 1),  # RowsPerStrip
        (279, 4, count, counts_at),  # StripByteCounts
    ]
    directory = (struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", *tag) for tag in tags)
                 + struct.pack("<I", 0))
    offsets = np.arange(pixels_at, pixels_at + count, dtype="<u4").tobytes()
    counts = np.ones(count, dtype="<u4").tobytes()
    return b"II*\0" + struct.pack("<I", 8) + directory + offsets + counts + b"\x80" * count


def progressive_jpeg(side: int, scans: int) -> bytes:
    """A side × side grey progressive JPEG with `scans` extra empty scans: each costs the decoder a full pass."""
    picture = io.BytesIO()
    Image.new("L", (side, side), 128).save(picture, "JPEG", progressive=True, quality=10)
    data = picture.getvalue()
    first_scan = data.index(b"\xff\xda")
    header_length = struct.unpack(">H", data[first_scan + 2 : first_scan + 4])[0]
    empty_scan = data[first_scan : first_scan + 2 + header_length]  # The scan header alone, with no coded data.
    return data[:first_scan] + empty_scan * scans + data[first_scan:]


def float_tiff_with_nan() -> bytes:
    """A floating-point TIFF of a "1" whose corner pixel is NaN."""
    pixels = np.zeros((40, 40), np.float32)
    pixels[8:32, 18:22] = 1.0
    pixels[0, 0] = np.nan
    picture = io.BytesIO()
    Image.fromarray(pixels, mode="F").save(picture, "TIFF")
    return picture.getvalue()


def gzip_fits(side: int) -> bytes:
    """A FITS file holding a side × side 8-bit picture as a GZIP-compressed tile: a few kilobytes that Pillow's
    pure-Python decoder walks pixel by pixel (160 KB at side 6,000 cost 12 s and 1.8 GB)."""
    import gzip

    def header(*cards: str) -> bytes:
        text = b"".join(card.ljust(80).encode("ascii") for card in (*cards, "END"))
        return text.ljust(-(-len(text) // 2880) * 2880, b" ")

    primary = header("SIMPLE  = T", "BITPIX  = 8", "NAXIS   = 0")
    table = header("XTENSION= 'BINTABLE'", "BITPIX  = 8", "NAXIS   = 2", "NAXIS1  = 8", "NAXIS2  = 1",
                   "ZIMAGE  = T", "ZCMPTYPE= 'GZIP_1  '", "ZBITPIX = 8", "ZNAXIS  = 2", f"ZNAXIS1 = {side}",
                   f"ZNAXIS2 = {side}")
    return primary + table + bytes(8) + gzip.compress(bytes(4 * side * side), 9)
