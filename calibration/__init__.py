"""Calibration for the inspection station.

- :mod:`calibration.sensors`: camera intrinsics, camera <-> scanner extrinsics
  (plane method), scanner clouds projected into the camera's pixel grid, ``calib.toml``.
- :mod:`calibration.thresholds`: per-line decision thresholds (fixed, MAD, quantile,
  from labelled parts), the policy parsed from a profile's ``[threshold]`` table.
- :mod:`calibration.int8`: a line's preprocessed frames as TensorRT INT8 calibration data.
- :mod:`calibration.rig`, :mod:`calibration.synthetic_scores`: synthetic rigs and score
  lines with known truth, for validation.
- :mod:`calibration.cli`: ``musc-edge calibrate ...``.
"""
