"""The model manifest: what an exported encoder is, written beside its files as JSON.

`export` writes it, `load_engine` reads it and refuses what does not match.
Every check of a manifest's values lives in `Manifest.__post_init__`.

Graph conventions (fixed, so they are not repeated in every manifest):
- 2D: input ``image`` float32 (B, 3, S, S), RGB, already normalized with the
  manifest's mean/std; outputs ``layer{i}`` float32 (B, H, W, C_i) for each
  selected layer i, H x W = ``grid``.
- 3D: inputs ``neighbourhood`` float32 (B, G, M, 3) (group points relative to
  their centre) and ``centres`` float32 (B, G, 3); outputs ``layer{i}`` float32
  (B, G, C_i).
The batch axis is dynamic; every other axis is fixed at export.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

MODALITIES = ("2d", "3d")
PRECISIONS = ("fp32", "fp16", "int8")
INPUT_NAMES = {"2d": ("image",), "3d": ("neighbourhood", "centres")}


class ManifestMismatch(ValueError):
    """A manifest (or its files) does not match what the caller expects."""


def output_names(layers) -> list[str]:
    """Graph output names of the selected layers, in order."""
    return [f"layer{i}" for i in layers]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class OnnxFile:
    """The ONNX graph: ``path`` relative to the manifest's folder."""

    path: str
    sha256: str
    precision: str = "fp32"


@dataclass(frozen=True)
class EngineFile:
    """A native TensorRT engine and what it was built for (it runs only there)."""

    path: str
    sha256: str
    precision: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    max_batch: int


@dataclass(frozen=True)
class Manifest:
    """One exported encoder.

    input: 2D ``{"image_size": S, "mean": [3], "std": [3]}``; 3D ``{"groups": G,
    "group_size": M}``. patch_size: pixels per grid cell (2D; None for 3D).
    grid: [H, W] (2D) or [G] (3D). layers / channels: per output, in order.
    features: how the outputs were taken (e.g. final LayerNorm applied, CNN
    resampling), for people and for profile checks.
    parity: export-time check of ONNX Runtime against torch on one input,
    ``{"max_abs_error": [...], "scale": [...]}`` per output (for an int8 graph
    recorded, not enforced).
    """

    name: str
    architecture: str
    modality: str
    input: dict
    patch_size: int | None
    grid: list[int]
    layers: list[int]
    channels: list[int]
    precision: str
    opset: int
    onnx: OnnxFile
    weights: dict
    created: str
    musc_edge_version: str
    features: dict = field(default_factory=dict)
    engine: EngineFile | None = None
    parity: dict | None = None

    def __post_init__(self) -> None:
        def bad(msg: str) -> ValueError:
            return ValueError(f"manifest {self.name!r}: {msg}")

        if self.modality not in MODALITIES:
            raise bad(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        if self.precision not in PRECISIONS:
            raise bad(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not self.layers or len(self.channels) != len(self.layers):
            raise bad(f"layers {self.layers} and channels {self.channels} must be non-empty and of equal length")
        if any(c < 1 for c in self.channels):
            raise bad(f"channels must be positive, got {self.channels}")
        if self.modality == "2d":
            missing = {"image_size", "mean", "std"} - set(self.input)
            if missing:
                raise bad(f"2d input needs {sorted(missing)}")
            if len(self.input["mean"]) != 3 or len(self.input["std"]) != 3 or min(self.input["std"]) <= 0:
                raise bad(f"mean/std must be 3 values with std > 0, got {self.input['mean']}, {self.input['std']}")
            if len(self.grid) != 2 or self.patch_size is None or self.patch_size < 1:
                raise bad(f"2d needs grid [h, w] and a patch_size, got {self.grid}, {self.patch_size}")
        else:
            missing = {"groups", "group_size"} - set(self.input)
            if missing:
                raise bad(f"3d input needs {sorted(missing)}")
            if self.grid != [self.input["groups"]]:
                raise bad(f"3d grid must be [groups], got {self.grid}")
        if not self.onnx.path or len(self.onnx.sha256) != 64:
            raise bad("files.onnx needs a path and a sha256")
        if self.engine is not None and len(self.engine.sha256) != 64:
            raise bad("files.engine needs a sha256")

    # -- views ---------------------------------------------------------------
    @property
    def image_size(self) -> int | None:
        return self.input.get("image_size")

    @property
    def input_names(self) -> tuple[str, ...]:
        return INPUT_NAMES[self.modality]

    @property
    def output_names(self) -> list[str]:
        return output_names(self.layers)

    def input_shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        """The graph's input shapes at batch size ``batch``."""
        if self.modality == "2d":
            s = self.input["image_size"]
            return {"image": (batch, 3, s, s)}
        g, m = self.input["groups"], self.input["group_size"]
        return {"neighbourhood": (batch, g, m, 3), "centres": (batch, g, 3)}

    def expected_value(self, key: str):
        """The manifest's value for an ``expect`` key (top-level field or input entry)."""
        if key in self.input:
            return self.input[key]
        if key in {f.name for f in dataclasses.fields(self)}:
            return getattr(self, key)
        raise ValueError(f"cannot check {key!r} against a manifest; known keys: "
                         f"{sorted({f.name for f in dataclasses.fields(self)} | set(self.input))}")

    # -- JSON ----------------------------------------------------------------
    def to_dict(self) -> dict:
        doc = dataclasses.asdict(self)
        files = {"onnx": doc.pop("onnx")}
        engine = doc.pop("engine")
        if engine is not None:
            files["engine"] = engine
        doc["files"] = files
        if doc["parity"] is None:
            doc.pop("parity")
        return doc

    @classmethod
    def from_dict(cls, doc: dict) -> "Manifest":
        """Build from parsed JSON; missing or unknown fields are a ValueError naming them."""
        doc = dict(doc)
        files = doc.pop("files", None)
        if not isinstance(files, dict) or "onnx" not in files:
            raise ValueError("manifest has no files.onnx entry")
        unknown_files = set(files) - {"onnx", "engine"}
        if unknown_files:
            raise ValueError(f"manifest files has unknown entries {sorted(unknown_files)}")
        names = {f.name for f in dataclasses.fields(cls)} - {"onnx", "engine"}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING} - {"onnx"}
        missing = required - set(doc)
        unknown = set(doc) - names
        if missing or unknown:
            raise ValueError(f"manifest fields: missing {sorted(missing)}, unknown {sorted(unknown)}")
        try:
            onnx = OnnxFile(**files["onnx"])
            engine = EngineFile(**files["engine"]) if files.get("engine") else None
        except TypeError as e:
            raise ValueError(f"manifest files entry malformed: {e}") from None
        doc["grid"] = list(doc["grid"])
        doc["layers"] = [int(i) for i in doc["layers"]]
        doc["channels"] = [int(c) for c in doc["channels"]]
        return cls(onnx=onnx, engine=engine, **doc)

    def digest(self) -> str:
        """Short sha256 of the canonical JSON: the model's id in verdicts. Leaves out what
        does not change the model: the creation time and the weights' local path."""
        doc = self.to_dict()
        doc.pop("created")
        doc["weights"] = {k: v for k, v in doc["weights"].items() if k != "source"}
        canon = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, path: str | Path) -> "Manifest":
        """Read a manifest file. A missing file is a FileNotFoundError that says how to create one."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"encoder manifest {path} not found; create it with "
                f"`musc-edge export --encoder NAME --out {path.parent}` (see README, Exporting encoders)")
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"manifest {path} is not valid JSON: {e}") from None
        return cls.from_dict(doc)


def _comparable(value):
    if isinstance(value, (list, tuple)):
        return [_comparable(v) for v in value]
    if isinstance(value, float):
        return round(value, 6)
    return value


def check_expected(manifest: Manifest, expect: dict) -> None:
    """Refuse a manifest whose values differ from ``expect`` (e.g. a line profile's
    ``{"modality": "2d", "image_size": 224, "layers": [2, 3, 4]}``).

    Raises ManifestMismatch naming the field, the expected and the found value.
    """
    for key, want in expect.items():
        found = manifest.expected_value(key)
        if _comparable(found) != _comparable(want):
            raise ManifestMismatch(
                f"encoder {manifest.name!r} does not match the line profile: "
                f"{key} expected {want!r}, manifest has {found!r}")
