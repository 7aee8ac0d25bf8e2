"""Pictures: a user's picture file → decoded within bounds (`decode`; a drawing's raw grey pixels: `drawing`) → a
28×28 MNIST-style digit (`prepare`), or the digits of a number (`segment`).

May import: `digits.data`, `digits.errors`.
"""
