"""Exported encoders at the station: load by manifest, one interface over backends.

    engine = load_engine("models/efficientnet-lite0-224/manifest.json",
                         expect={"modality": "2d", "image_size": 224, "layers": [2, 3, 5]})
    grids = engine.run(engine.preprocess_rgb(rgb))   # list over layers of (B, H, W, C)

Backends: a native TensorRT engine (``provider == "tensorrt-native"``) when the
manifest has one built for this GPU and TensorRT version, otherwise ONNX
Runtime with the best execution provider present (TensorRT, CUDA, CPU). Nothing
here imports torch; `ensure_default_encoders` exports in a subprocess.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from edge_runtime.engines.catalog import CATALOG, DEFAULT_2D_ENCODER, EncoderSpec, encoder_spec
from edge_runtime.engines.manifest import (
    Manifest,
    ManifestMismatch,
    check_expected,
    sha256_file,
)
from edge_runtime.engines.onnx_runtime import PREFERENCE, OnnxRunner, choose_providers
from edge_runtime.engines.preprocess import preprocess_rgb

log = logging.getLogger(__name__)

NATIVE = "tensorrt-native"

__all__ = [
    "CATALOG",
    "DEFAULT_2D_ENCODER",
    "Engine",
    "EncoderSpec",
    "Manifest",
    "ManifestMismatch",
    "default_encoder_dir",
    "encoder_spec",
    "ensure_default_encoders",
    "load_engine",
    "preprocess_rgb",
]


class Engine:
    """An exported encoder ready to run.

    manifest: what it is; provider: what actually runs it ("tensorrt-native" or
    an ONNX Runtime execution provider name); fallback_reason: why a native
    engine listed in the manifest was not used (None otherwise).
    """

    def __init__(self, manifest: Manifest, runner, fallback_reason: str | None = None):
        self.manifest = manifest
        self.provider: str = runner.provider
        self.fallback_reason = fallback_reason
        self._runner = runner

    def __repr__(self) -> str:
        return f"Engine({self.manifest.name!r}, provider={self.provider!r}, digest={self.manifest.digest()})"

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Encode a batch.

        2D: ``run(image)``, image float32 (B, 3, S, S) normalized (see
        preprocess_rgb) -> list over layers of float32 (B, H, W, C_l).
        3D: ``run(neighbourhood, centres)``, float32 (B, G, M, 3) points relative
        to their centre and (B, G, 3) -> list over layers of float32 (B, G, C_l).
        Wrong count, shape or non-finite values are a ValueError.
        """
        return [np.asarray(out, dtype=np.float32) for out in self._runner.run(self._feeds(inputs))]

    def run_device(self, *inputs: np.ndarray, xp=np, device_type: str = "cpu", device_id: int = 0) -> list:
        """``run``, the outputs left where ONNX Runtime computed them (xp arrays, e.g. cupy on "cuda").

        ONNX Runtime runners only (I/O binding + DLPack); a native TensorRT engine is a ValueError.
        """
        if not hasattr(self._runner, "run_bound"):
            raise ValueError(f"{self.manifest.name}: {self.provider} cannot hand outputs over on the device")
        return self._runner.run_bound(self._feeds(inputs), xp, device_type, device_id)

    def _feeds(self, inputs) -> dict[str, np.ndarray]:
        """The inputs checked against the manifest, by graph input name."""
        m = self.manifest
        if len(inputs) != len(m.input_names):
            raise ValueError(f"{m.name} takes {len(m.input_names)} input(s) {m.input_names}, got {len(inputs)}")
        batch = np.shape(inputs[0])[0] if np.ndim(inputs[0]) else 0
        if batch < 1:
            raise ValueError(f"{m.name}: inputs need a batch axis with at least one item, "
                             f"got shape {np.shape(inputs[0])}")
        feeds = {}
        for name, array, shape in zip(m.input_names, inputs, m.input_shapes(batch).values()):
            array = np.ascontiguousarray(array, dtype=np.float32)
            if array.shape != shape:
                raise ValueError(f"{m.name}: input {name} must have shape {shape}, got {array.shape}")
            if not np.isfinite(array).all():
                raise ValueError(f"{m.name}: input {name} contains NaN or infinite values")
            feeds[name] = array
        return feeds

    def preprocess_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 (H, W, 3) or (B, H, W, 3) -> float32 (B, 3, S, S) as this encoder expects
        (OpenCV resize to S x S, /255, (x - mean) / std; see preprocess.preprocess_rgb)."""
        if self.manifest.modality != "2d":
            raise ValueError(f"{self.manifest.name} is a 3D encoder; it takes point groups, not RGB frames")
        return preprocess_rgb(rgb, self.manifest.image_size, self.manifest.input["mean"], self.manifest.input["std"])


def _verify_file(manifest_path: Path, relpath: str, sha256: str, what: str) -> Path:
    """The file a manifest lists, after checking it exists and has the listed sha256."""
    path = manifest_path.parent / relpath
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} listed in {manifest_path} is missing; "
                                f"re-run `musc-edge export` into {manifest_path.parent}")
    found = sha256_file(path)
    if found != sha256:
        raise ManifestMismatch(f"{what} file {path} does not match its manifest: sha256 {found[:16]}..., "
                               f"manifest says {sha256[:16]}... (file replaced or corrupted; re-export)")
    return path


def load_engine(
    manifest_path: str | Path,
    expect: dict | None = None,
    providers: list[str] | None = None,
    allow_onnx_fallback: bool = True,
    threads: int | None = None,
    gpu: bool = False,
) -> Engine:
    """Load the encoder a manifest describes.

    expect: values the line profile requires, e.g. ``{"modality": "2d",
    "image_size": 224, "layers": [2, 3, 5]}`` (any manifest field or input
    entry); a difference raises ManifestMismatch naming field, expected, found.
    providers: ordered backends to try; "tensorrt-native" and ONNX Runtime
    execution provider names. None = native engine if present, then
    TensorRT / CUDA / CPU execution providers, whichever exist.
    allow_onnx_fallback: when a native engine cannot run here (built for
    another GPU or TensorRT version, or no TensorRT/GPU), run the ONNX file
    instead; False makes that a ManifestMismatch (or EngineUnavailable).
    threads: ONNX Runtime intra-op threads (None = its default).
    gpu: the profile asked for a GPU; running ONNX Runtime without a GPU
    execution provider is then a WARNING saying why (see choose_providers).

    Missing files raise FileNotFoundError saying how to create them; a file
    whose sha256 differs from the manifest raises ManifestMismatch.
    """
    manifest_path = Path(manifest_path)
    manifest = Manifest.read(manifest_path)
    if expect:
        check_expected(manifest, expect)
    onnx_path = _verify_file(manifest_path, manifest.onnx.path, manifest.onnx.sha256, "ONNX")
    order = list(providers) if providers else [NATIVE, *PREFERENCE]
    fallback_reason = None
    if NATIVE in order and manifest.engine is not None:
        from edge_runtime.engines.tensorrt_runtime import EngineUnavailable, TensorRTRunner

        engine_path = _verify_file(manifest_path, manifest.engine.path, manifest.engine.sha256, "TensorRT engine")
        try:
            return Engine(manifest, TensorRTRunner(engine_path, manifest.engine, manifest.output_names))
        except (ManifestMismatch, EngineUnavailable) as e:  # CUDA errors arrive as EngineUnavailable
            if not allow_onnx_fallback:
                raise
            fallback_reason = str(e)
            log.warning("%s: native TensorRT engine refused (%s); running %s instead", manifest.name, e,
                        manifest.onnx.path)
    ort_providers = [p for p in order if p != NATIVE]
    if not ort_providers:
        raise ValueError(f"{manifest.name}: no ONNX Runtime execution provider requested (providers={order})")
    runner = OnnxRunner(onnx_path, choose_providers(ort_providers, gpu_expected=gpu), manifest.output_names, threads,
                        trt_fp16=manifest.precision != "fp32" and manifest.onnx.precision == "fp32")
    return Engine(manifest, runner, fallback_reason)


def default_encoder_dir() -> Path:
    """Where default encoders are exported: $MUSC_EDGE_MODELS or ~/.cache/musc-edge/models."""
    env = os.environ.get("MUSC_EDGE_MODELS")
    return Path(env) if env else Path.home() / ".cache" / "musc-edge" / "models"


def _default_export_args(spec: EncoderSpec, layers: tuple[int, ...], out: Path) -> list[str]:
    return ["--encoder", spec.name, "--image-size", str(spec.default_image_size),
            "--layers", *map(str, layers), "--precision", "fp32", "--out", str(out)]


def ensure_default_encoders(models_dir: str | Path | None = None, timeout: float = 900,
                            layers: tuple[int, ...] | None = None) -> Path:
    """Manifest path of the default 2D encoder (EfficientNet-Lite0, 224 px, the catalogue's
    default stages, or ``layers``).

    Exported on first use into ``models_dir`` (default: default_encoder_dir())
    by the ``musc-edge export`` command in a subprocess: this process never imports
    torch, and the engines never import the export package (which imports them). Without torch installed this is a RuntimeError saying how to get it.
    """
    spec = encoder_spec(DEFAULT_2D_ENCODER)
    layers = tuple(layers or spec.default_layers)
    root = Path(models_dir) if models_dir is not None else default_encoder_dir()
    suffix = "" if layers == spec.default_layers else "-stages" + "".join(map(str, layers))
    target = root / f"{spec.name}-{spec.default_image_size}{suffix}"
    manifest_path = target / "manifest.json"
    expect = {"name": spec.name, "image_size": spec.default_image_size, "layers": list(layers)}
    try:
        check_expected(Manifest.read(manifest_path), expect)
        return manifest_path
    except (FileNotFoundError, ValueError) as e:
        log.info("default encoder not usable at %s (%s); exporting it", target, e)
    if importlib.util.find_spec("torch") is None:
        raise RuntimeError(
            f"the default encoder {spec.name} is not exported yet and torch is not installed here. "
            f"Install the export extra (pip install -e '.[export]') or export it on another machine: "
            f"musc-edge export {' '.join(_default_export_args(spec, layers, target))}")
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".export-{spec.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [sys.executable, "-m", "edge_runtime.cli", "export", *_default_export_args(spec, layers, staging)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise RuntimeError(f"exporting {spec.name} failed ({' '.join(cmd)}):\n{done.stderr[-4000:]}")
    # Publish by rename (whole folder at once); what was at target failed the check above.
    # A concurrent station may win the rename: its export is as good as ours.
    shutil.rmtree(target, ignore_errors=True)
    try:
        os.rename(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not manifest_path.is_file():
            raise
    return manifest_path
