"""INT8 calibration data: frames on disk, batches, the cache and its guard; TensorRT where it exists."""
from __future__ import annotations

import numpy as np
import pytest

from calibration.int8 import (
    CalibrationFrames,
    CallbackErrors,
    cache_key,
    make_int8_calibrator,
    read_cache,
    tensorrt_available,
    write_cache,
    write_calibration_frames,
)

SHAPE = (3, 16, 16)


def _frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=SHAPE).astype(np.float32) for _ in range(n)]


def test_frames_round_trip_in_batches(tmp_path):
    frames = _frames(10)
    assert write_calibration_frames(iter(frames), tmp_path / "f") == 10
    reader = CalibrationFrames(tmp_path / "f", batch_size=4, input_shape=SHAPE)
    assert len(reader) == 2 and reader.n_frames == 10  # the last 2 frames make no full batch
    batches = list(reader)
    assert all(b.shape == (4, *SHAPE) and b.dtype == np.float32 and b.flags.c_contiguous for b in batches)
    np.testing.assert_array_equal(batches[1][3], frames[7])
    assert reader.next_batch() is not None and reader.next_batch() is not None and reader.next_batch() is None
    reader.reset()
    np.testing.assert_array_equal(reader.next_batch(), batches[0])


def test_npz_and_stacked_npy_layouts(tmp_path):
    frames = _frames(6)
    np.savez(tmp_path / "stack.npz", frames=np.stack(frames))
    np.savez(tmp_path / "each.npz", **{f"f{i:02d}": f for i, f in enumerate(frames)})
    for path in (tmp_path / "stack.npz", tmp_path / "each.npz"):
        batches = list(CalibrationFrames(path, batch_size=3, input_shape=SHAPE))
        np.testing.assert_array_equal(np.concatenate(batches), np.stack(frames))
    (tmp_path / "stacks").mkdir()
    np.save(tmp_path / "stacks" / "a.npy", np.stack(frames[:4]))
    np.save(tmp_path / "stacks" / "b.npy", frames[4])
    np.save(tmp_path / "stacks" / "c.npy", frames[5])
    stacked = CalibrationFrames(tmp_path / "stacks", batch_size=2, input_shape=SHAPE)
    np.testing.assert_array_equal(np.concatenate(list(stacked)), np.stack(frames))
    (tmp_path / "one").mkdir()
    np.savez(tmp_path / "one" / "frames.npz", frames=np.stack(frames))
    assert len(CalibrationFrames(tmp_path / "one", 2, SHAPE)) == 3


def test_bad_frames(tmp_path):
    write_calibration_frames(_frames(4), tmp_path / "f")
    with pytest.raises(ValueError, match="expected \\(3, 32, 32\\)"):
        next(iter(CalibrationFrames(tmp_path / "f", 2, (3, 32, 32))))
    with pytest.raises(ValueError, match="fewer than one batch"):
        CalibrationFrames(tmp_path / "f", 8, SHAPE)
    with pytest.raises(ValueError, match="batch_size"):
        CalibrationFrames(tmp_path / "f", 0, SHAPE)
    with pytest.raises(FileNotFoundError):
        CalibrationFrames(tmp_path / "missing.npz", 1, SHAPE)
    with pytest.raises(ValueError, match="differs"):
        write_calibration_frames([np.zeros(SHAPE), np.zeros((3, 8, 8))], tmp_path / "g")
    with pytest.raises(ValueError, match="NaN"):
        write_calibration_frames([np.full(SHAPE, np.nan)], tmp_path / "h")


def test_cache_is_reused_only_for_the_same_frames(tmp_path):
    write_calibration_frames(_frames(4, seed=1), tmp_path / "a")
    write_calibration_frames(_frames(4, seed=2), tmp_path / "b")
    a = CalibrationFrames(tmp_path / "a", 2, SHAPE)
    b = CalibrationFrames(tmp_path / "b", 2, SHAPE)
    assert a.digest() == CalibrationFrames(tmp_path / "a", 2, SHAPE).digest()
    assert a.digest() != b.digest() and a.digest() != CalibrationFrames(tmp_path / "a", 1, SHAPE).digest()
    cache = tmp_path / "calib.cache"
    key = cache_key(a.digest(), "onnx-sha-1", "10.3.0")
    assert read_cache(cache, key) is None
    payload = b"TRT-10-EntropyCalibration2\n" + bytes(range(256))
    write_cache(cache, payload, key)
    assert read_cache(cache, key) == payload
    assert read_cache(cache, cache_key(b.digest(), "onnx-sha-1", "10.3.0")) is None
    assert read_cache(cache, cache_key(a.digest(), "onnx-sha-2", "10.3.0")) is None  # another graph
    assert read_cache(cache, cache_key(a.digest(), "onnx-sha-1", "10.4.0")) is None  # another TensorRT
    cache.write_bytes(payload[:10])  # truncated behind the sidecar's back
    assert read_cache(cache, key) is None


def test_every_frame_is_validated_before_a_build(tmp_path):
    write_calibration_frames(_frames(5), tmp_path / "f")
    frames = CalibrationFrames(tmp_path / "f", 2, SHAPE)
    frames.validate()
    bad = _frames(1)[0]
    bad[0, 3, 3] = np.nan
    np.save(tmp_path / "f" / "000003.npy", bad)  # written behind write_calibration_frames' back
    with pytest.raises(ValueError, match="frame 3 contains NaN"):
        frames.validate()
    np.save(tmp_path / "f" / "000003.npy", bad[:, :8])
    with pytest.raises(ValueError, match="frame 3 has shape"):
        frames.validate()
    np.save(tmp_path / "f" / "000004.npy", bad)  # the fifth frame is in no full batch: never read
    np.save(tmp_path / "f" / "000003.npy", _frames(1)[0])
    frames.validate()


def test_callback_errors_are_kept_and_raised_after_the_build():
    errors = CallbackErrors()
    assert errors.call("get_batch", lambda n: n + 1, 1) == 2
    errors.raise_first()  # nothing recorded
    assert errors.call("get_batch", lambda: 1 / 0, fallback=None) is None
    assert errors.call("write_calibration_cache", lambda: {}["x"]) is None
    with pytest.raises(RuntimeError, match="failed in get_batch: division by zero") as info:
        errors.raise_first()
    assert isinstance(info.value.__cause__, ZeroDivisionError)


@pytest.mark.skipif(tensorrt_available(), reason="checks the message given where TensorRT is missing")
def test_calibrator_without_tensorrt_says_so(tmp_path):
    write_calibration_frames(_frames(2), tmp_path / "f")
    with pytest.raises(RuntimeError, match="TensorRT"):
        make_int8_calibrator(CalibrationFrames(tmp_path / "f", 1, SHAPE), tmp_path / "c.cache", "onnx-sha")


@pytest.mark.skipif(not tensorrt_available(), reason="TensorRT (python package `tensorrt`) is not installed here")
def test_tensorrt_calibrator_serves_batches_and_cache(tmp_path):
    import tensorrt as trt

    write_calibration_frames(_frames(4), tmp_path / "f")
    frames = CalibrationFrames(tmp_path / "f", 2, SHAPE)
    calibrator = make_int8_calibrator(frames, tmp_path / "c.cache", "onnx-sha")
    assert isinstance(calibrator, trt.IInt8EntropyCalibrator2)
    assert calibrator.get_batch_size() == 2
    assert calibrator.read_calibration_cache() is None
    pointers = [calibrator.get_batch(["images"]) for _ in range(3)]
    assert pointers[0] and pointers[1] and pointers[2] is None
    calibrator.write_calibration_cache(b"cache-bytes")
    assert make_int8_calibrator(frames, tmp_path / "c.cache", "onnx-sha").read_calibration_cache() == b"cache-bytes"
    assert make_int8_calibrator(frames, tmp_path / "c.cache", "other-onnx").read_calibration_cache() is None
    assert calibrator.get_batch(["a", "b"]) is None  # raised inside the callback: recorded, not lost
    with pytest.raises(RuntimeError, match="one input tensor"):
        calibrator.errors.raise_first()
