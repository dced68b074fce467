"""Encoder export: torch definitions, official checkpoints, ONNX / TensorRT, manifests.

The only part of musc-edge that imports torch (install with the `export` extra).
Entry points: `musc-edge export` (export.cli), `musc-edge bench encoders`
(export.bench), `export.exporter.export_encoder`.
"""
