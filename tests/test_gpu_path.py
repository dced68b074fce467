"""The GPU path: what runs on the CPU (array-module selection, the GPU's block form of
the kernel with numpy as the array module, ONNX Runtime I/O binding + DLPack on the
host), and, where CuPy and a GPU exist, the CuPy window against the CPU window."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from edge_runtime.inspection.device import array_module, cupy_or_reason, parse_device, to_host
from edge_runtime.inspection.window import LineWindow
from edge_runtime.scoring import augment, l2_normalize
from edge_runtime.scoring.tiles import _blocks, squared_min_distances

CUPY, NO_GPU = cupy_or_reason()
needs_gpu = pytest.mark.skipif(CUPY is None, reason=f"GPU path not run: {NO_GPU}")


@pytest.mark.parametrize("device, parsed", [("cpu", ("cpu", 0)), ("cuda", ("cuda", 0)), ("cuda:1", ("cuda", 1))])
def test_devices_parse(device, parsed):
    assert parse_device(device) == parsed


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cpu:0", ""])
def test_bad_devices_are_refused(device):
    with pytest.raises(ValueError, match="device must be"):
        parse_device(device)


def test_cpu_is_numpy_and_a_missing_gpu_is_an_error_not_a_cpu_run():
    assert array_module("cpu") is np
    if CUPY is None:
        with pytest.raises(RuntimeError, match="GPU path cannot run here"):
            array_module("cuda:0")
        with pytest.raises(RuntimeError, match="GPU path cannot run here"):
            LineWindow(8, ("2d",), device="cuda:0")
    with pytest.raises(ValueError, match="runs on the CPU"):
        LineWindow(8, ("2d",), match_radius=2, device="cuda:0")


def test_the_gpu_block_form_equals_the_cpu_tiles_with_numpy_as_the_array_module():
    rng = np.random.default_rng(0)
    z = l2_normalize(rng.normal(size=(7, 30, 9))).astype(np.float32)
    left, right = augment(z[0], "left", np), augment(z[1:], "right", np)
    select = np.array([4, 0, 2, 3])  # not contiguous: the GPU form gathers
    expect = squared_min_distances(left, right, select, budget=4 * 30 * 7)  # tiles of 7 rows
    for chosen in (select, np.array([1, 2, 3])):  # a contiguous run: the GPU form slices
        to_refs = np.empty((30, chosen.size), np.float32)
        from_refs = np.empty((chosen.size, 30), np.float32)
        _blocks(np, left, right, chosen, 2 * 4 * 30 * 30, to_refs, from_refs)  # two references per block
        want = squared_min_distances(left, right, chosen)
        np.testing.assert_allclose(to_refs, want[0], atol=1e-6)
        np.testing.assert_allclose(from_refs, want[1], atol=1e-6)
    np.testing.assert_allclose(expect[0], squared_min_distances(left, right, select, workers=1)[0], atol=1e-6)


def _matmul_graph(path):
    onnx = pytest.importorskip("onnx", reason="building the test graph needs onnx (the export extra)")
    from onnx import TensorProto, helper, numpy_helper

    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["r"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 3]),
         helper.make_tensor_value_info("r", TensorProto.FLOAT, ["b", 3])],
        [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_io_binding_hands_outputs_over_through_dlpack(tmp_path):
    from edge_runtime.engines.onnx_runtime import OnnxRunner

    runner = OnnxRunner(_matmul_graph(tmp_path / "m.onnx"), ["CPUExecutionProvider"], ["y", "r"])
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    bound = runner.run_bound({"x": x})
    for got, want in zip(bound, runner.run({"x": x})):
        assert isinstance(got, np.ndarray)
        np.testing.assert_array_equal(got, want)


@needs_gpu
@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(),
                    reason="GPU path not run: this onnxruntime has no CUDAExecutionProvider")
def test_io_binding_leaves_outputs_on_the_gpu(tmp_path):
    from edge_runtime.engines.onnx_runtime import OnnxRunner

    path = _matmul_graph(tmp_path / "m.onnx")
    runner = OnnxRunner(path, ["CUDAExecutionProvider", "CPUExecutionProvider"], ["y", "r"])
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    got = runner.run_bound({"x": x}, CUPY, "cuda", 0)
    assert all(isinstance(g, CUPY.ndarray) for g in got)
    for g, want in zip(got, OnnxRunner(path, ["CPUExecutionProvider"], ["y", "r"]).run({"x": x})):
        np.testing.assert_allclose(to_host(g), want, atol=1e-3)  # TF32 may be on for the GPU's MatMul


@needs_gpu
@pytest.mark.parametrize("modalities", [("2d",), ("2d", "3d")])
def test_gpu_window_equals_the_cpu_window(modalities):
    """fp32 on the GPU (CUPY_TF32 unset): the CPU path's scores within 1e-4."""
    from test_window import make_part

    rng = np.random.default_rng(5)
    cpu, gpu = LineWindow(5, modalities), LineWindow(5, modalities, device="cuda:0")
    for t in range(8):
        part = make_part(rng, modalities)
        assert cpu.add(f"p{t}", part) == gpu.add(f"p{t}", part)
    assert isinstance(gpu._rows[modalities[0]], CUPY.ndarray)  # rows resident on the GPU
    for name in cpu.members:
        for m, s in cpu.scores(name).items():
            np.testing.assert_allclose(gpu.scores(name)[m], s, atol=1e-4)
    restored = LineWindow.from_state(gpu.state(), "cpu")
    for name in cpu.members:
        for m, s in cpu.scores(name).items():
            np.testing.assert_allclose(restored.scores(name)[m], s, atol=1e-4)
