"""Calibration for the inspection station.

- :mod:`calibration.sensors`: camera intrinsics, camera <-> scanner extrinsics
  (plane method), scanner clouds projected into the camera's pixel grid, ``calib.toml``.
- decision thresholds: ``musc-edge calibrate threshold`` fits the policies of
  :mod:`edge_runtime.inspection.policies` (fixed, MAD, quantile, from labelled parts),
  which the station reads; calibration depends on the runtime, never the other way.
- :mod:`calibration.int8`: a line's preprocessed frames as TensorRT INT8 calibration data.
- :mod:`calibration.rig`, :mod:`calibration.synthetic_scores`: synthetic rigs and score
  lines with known truth, for validation.
- :mod:`calibration.cli`: ``musc-edge calibrate ...``.
"""
