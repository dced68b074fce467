"""`musc-edge export` and `musc-edge bench encoders` from the command line."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from edge_runtime.cli import main as musc_edge
from edge_runtime.engines import load_engine
from export.bench import main as bench_main
from export.cli import main as export_main


def test_export_default_encoder_through_the_dispatcher(tmp_path, capsys):
    out = tmp_path / "lite0"
    assert musc_edge(["export", "--encoder", "efficientnet-lite0", "--image-size", "96", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "manifest.json")
    engine = load_engine(out / "manifest.json")
    m = engine.manifest
    assert (out / m.onnx.path).is_file() and m.onnx.path == "efficientnet-lite0.onnx"
    assert m.grid == [12, 12] and m.input["mean"] == pytest.approx([127 / 255] * 3)
    assert all(e <= 1e-4 * s for e, s in zip(m.parity["max_abs_error"], m.parity["scale"]))
    assert m.weights["source"].endswith("efficientnet-lite0-57934424.pth")


@pytest.mark.parametrize("args, message", [
    (["--encoder", "dino-vitb8"], "dino_vitbase8_pretrain.pth (https://dl.fbaipublicfiles.com/dino/"),
    (["--encoder", "point-mae"], "Pang-Yatian/Point-MAE"),
    (["--encoder", "efficientnet-lite0", "--layers", "2", "9"], r"layers must lie in [0, 6]"),
    (["--encoder", "efficientnet-lite0", "--layers", "4", "2"], "strictly increasing"),
    (["--encoder", "efficientnet-lite0", "--precision", "int8"], "needs --calibration"),
    (["--encoder", "dino-vits16", "--image-size", "100"], "not a multiple of its patch size 16"),
    (["--encoder", "point-mae", "--image-size", "224"], "--image-size does not apply"),
    (["--encoder", "efficientnet-lite0", "--groups", "64"], "--groups/--group-size do not apply"),
])
def test_bad_requests_fail_with_a_named_reason(args, message, tmp_path, capsys):
    assert export_main([*args, "--out", str(tmp_path)]) == 1
    assert message in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                    reason="TensorRT is installed here: the build itself is tested in test_engines_tensorrt.py")
def test_tensorrt_without_tensorrt_is_a_clear_error(tmp_path, capsys):
    assert export_main(["--encoder", "efficientnet-lite0", "--image-size", "64", "--tensorrt",
                        "--out", str(tmp_path)]) == 1
    assert "needs the TensorRT Python package" in capsys.readouterr().err


ENGINE_FOR = """
import sys
from export.cli import main
code = main(["--engine-for", sys.argv[1], "--precision", "fp16"])
assert "torch" not in sys.modules, "building an engine for an export imported torch"
sys.exit(code)
"""


def test_engine_for_an_existing_export_needs_no_torch(tmp_path):
    """On a Jetson the engine is built from a copied export folder, without torch."""
    export_main(["--encoder", "efficientnet-lite0", "--image-size", "64", "--out", str(tmp_path)])
    done = subprocess.run([sys.executable, "-c", ENGINE_FOR, str(tmp_path / "manifest.json")],
                          capture_output=True, text=True, timeout=120)
    if importlib.util.find_spec("tensorrt") is None:
        assert done.returncode == 1 and "needs the TensorRT Python package" in done.stderr
    else:
        assert done.returncode == 0, done.stderr
        assert load_engine(tmp_path / "manifest.json").manifest.engine is not None


def test_bench_writes_json_table_and_plot(tmp_path):
    assert bench_main(["--encoders", "efficientnet-lite0", "--batch-sizes", "1", "2", "--repeats", "1",
                       "--warmup", "0", "--image-size", "64", "--threads", "1", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "encoders.json").read_text())
    assert [(r["encoder"], r["batch"]) for r in doc["rows"]] == [("efficientnet-lite0", 1), ("efficientnet-lite0", 2)]
    for r in doc["rows"]:
        assert r["speedup"] == pytest.approx(r["torch_ms"] / r["ort_ms"])
        assert r["ort_per_s"] == pytest.approx(1e3 * r["batch"] / r["ort_ms"])
    assert set(doc["targets"]) == {"efficientnet-lite0 batch 1", "efficientnet-lite0 batch 2"}
    assert (tmp_path / "encoders.md").read_text().startswith("# encoders")
    assert (tmp_path / "encoders.png").stat().st_size > 0
