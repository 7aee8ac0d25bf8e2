"""Data: MNIST as verified uint8 arrays, and pictures drawn offline for tests and the not-a-digit detector.

Owns finding the MNIST files (the copy shipped in `digits/mnist/`, a folder, an .npz or a mirror), checking
their structure and checksums and parsing them (`mnist`), describing them (`statistics`), fetching a file by
its checksum (`download`), and drawing digits in the machine's fonts, pen strokes and things that are not
digits (`synthetic`).

May import: `digits.errors` only. Every other stage imports this one.
"""
