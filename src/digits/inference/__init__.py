"""Inference: one way to read prepared digits with a model (Keras or ONNX Runtime) and what it says about them
(`Prediction`, `Predictions`), the not-a-digit detector, exporting models, and reading picture files (each
prepared in a bounded worker process: `preparation`).

May import: `digits.training` (run folders, custom layers), `digits.pictures`, `digits.data`, `digits.errors`.
"""
