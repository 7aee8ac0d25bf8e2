"""Data: MNIST as verified uint8 arrays, and pictures drawn offline for tests and the not-a-digit detector.

Owns finding the MNIST files (the copy shipped in `digits/mnist/`, a folder, an .npz or a mirror), checking
their structure and checksums and parsing them (`mnist`), describing them (`statistics`), fetching a file by
its checksum (`download`), drawing digits in the machine's fonts, pen strokes and things that are not
digits (`synthetic`; distorted digits, textures and scene crops: `varied_non_digits`; pen glyphs and digit
pieces, research kinds near the digits: `near_digits`), and the real pictures
found in installed packages that only measure the not-a-digit verdict (`sample_photos`).

May import: `digits.errors` only. Every other stage imports this one.
"""
