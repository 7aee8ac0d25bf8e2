"""Evaluation: what a model got right and wrong, whether it overfits, which of several is better, and how far its
confidence can be trusted. Arrays (labels, probabilities, histories) in, results out; nothing here draws.

May import: `digits.inference`, `digits.training`, `digits.pictures`, `digits.data`, `digits.errors`.
"""
