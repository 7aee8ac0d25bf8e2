"""Pictures: a user's picture file → decoded within bounds (`decode`) → a 28×28 MNIST-style digit (`prepare`).

May import: `digits.data`, `digits.errors`.
"""
