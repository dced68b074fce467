"""A part's frames -> its aggregated features (preprocess, encode, aggregate).

2D: pad to square, resize + normalize as the encoder's manifest says, encode to
per-layer patch grids, aggregate (SNAMD), L2-normalize. 3D: MuSc-V2's cloud
preprocessing (background plane removal, cleaning, square padding, nearest
resize to the image size), foreground points, unit-radius normalization,
farthest point sampling of the group centres, KNN + iterative point grouping
(only as far as the 3D encoder reads them: see FeatureExtractor._groups),
per-layer centre features (FPFH at the profile's radii, or Point-MAE), L2-normalized
per point, then aggregated; or, with the "normals" encoder, the preprocessed
cloud's surface normals drawn as an image and encoded by the 2D encoder, so
the 3D features sit on the 2D patch grid ("fpfh+normals" on a 2D+3D line:
both, the normals as a second 3D stream). Everything lands in one S x S pixel
frame, so a centre's 2D patch and a point's pixel are known.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from edge_runtime import pointcloud
from edge_runtime.engines.preprocess import resize_frame
from edge_runtime.inspection.part import PartFeatures
from edge_runtime.inspection.settings import ENCODERS_3D, InspectionSettings
from edge_runtime.scoring import aggregate_2d, aggregate_3d, idw_weights, l2_normalize, point_to_patch


class InspectionError(ValueError):
    """A part that cannot be scored; ``code`` is the machine-readable reason."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Preprocessed:
    """The part as the encoders saw it: rgb uint8 (S, S, 3) and xyz float32 (S, S, 3), or None."""

    rgb: np.ndarray | None
    xyz: np.ndarray | None


def _timed(latency: dict, stage: str, t0: float) -> float:
    now = time.perf_counter()
    latency[stage] = latency.get(stage, 0.0) + (now - t0) * 1e3
    return now


class FeatureExtractor:
    """Frames of one part -> PartFeatures, for one line's settings.

    engine_2d : an `edge_runtime.engines.Engine` for 2D (None when the line has no 2D
        and its 3D encoder is not "normals", which the 2D engine encodes).
    engine_3d : an Engine for Point-MAE, or None for the weight-free encoders.
    """

    def __init__(self, settings: InspectionSettings, engine_2d=None, engine_3d=None):
        self.settings = settings
        self.engine_2d = engine_2d
        self.engine_3d = engine_3d
        if self._needs_2d_engine(settings) and engine_2d is None:
            raise ValueError("a line with 2D, or with the 'normals' 3D encoder, needs a 2D engine")
        self.grid = tuple(engine_2d.manifest.grid) if engine_2d is not None else (settings.image_size // 8,) * 2
        if engine_3d is not None:
            n3 = len(engine_3d.manifest.layers)
        elif settings.encoder_3d == "normals":
            n3 = len(engine_2d.manifest.layers)
        else:
            n3 = len(settings.fpfh_radii)
        if engine_2d is not None and "3d" in settings.modalities and len(engine_2d.manifest.layers) != n3:
            raise ValueError(f"2D encoder has {len(engine_2d.manifest.layers)} layers but the 3D encoder has {n3}: "
                             "cross-modal scoring pairs layers one to one")

    @classmethod
    def from_settings(cls, settings: InspectionSettings) -> "FeatureExtractor":
        """Load the engines a line's settings name (the default 2D encoder is exported on first use)."""
        from edge_runtime.engines import ensure_default_encoders, load_engine

        engine_2d = engine_3d = None
        gpu = settings.device != "cpu"  # a GPU profile warns loudly when ONNX Runtime has no GPU provider
        if cls._needs_2d_engine(settings):
            path = (ensure_default_encoders(layers=settings.default_stages()) if settings.encoder_2d == "default"
                    else settings.encoder_2d)
            engine_2d = load_engine(path, expect={"modality": "2d", "image_size": settings.image_size}, gpu=gpu)
        if "3d" in settings.modalities and settings.encoder_3d not in ENCODERS_3D:
            engine_3d = load_engine(settings.encoder_3d, expect={"modality": "3d"}, gpu=gpu)
        return cls(settings, engine_2d, engine_3d)

    @staticmethod
    def _needs_2d_engine(settings: InspectionSettings) -> bool:
        return "2d" in settings.modalities or ("3d" in settings.modalities and settings.encoder_3d == "normals")

    @property
    def model_digest(self) -> str:
        parts = [e.manifest.digest() for e in (self.engine_2d, self.engine_3d) if e is not None]
        if "3d" in self.settings.modalities and self.engine_3d is None:
            parts.append(self.settings.encoder_3d)
        return "+".join(parts)

    def extract(self, rgb: np.ndarray | None, xyz: np.ndarray | None) -> tuple[PartFeatures, Preprocessed, dict]:
        """Features of one part.

        rgb : uint8 (H, W, 3) RGB, or None. xyz : float32 (H, W, 3) organized
        cloud pixel-aligned with rgb (zeros = no measurement), or None.
        Returns (features, the preprocessed frames, latency in ms per stage).
        Raises InspectionError for frames that cannot be scored.
        """
        s = self.settings
        latency: dict[str, float] = {}
        if rgb is not None and xyz is not None and rgb.shape[:2] != xyz.shape[:2]:
            raise InspectionError("shape", f"rgb {rgb.shape[:2]} and xyz {xyz.shape[:2]} are not pixel-aligned")
        kw: dict = {}
        rgb_s = xyz_s = None
        if rgb is not None and "2d" in s.modalities:
            rgb_s, kw["z2"] = self._extract_2d(rgb, latency)
            kw["grid"] = self.grid
        if xyz is not None and "3d" in s.modalities:
            xyz_s, fields = self._extract_3d(xyz, latency)
            kw.update(fields)
        if not kw:
            raise InspectionError("no_modality", f"part has none of the line's modalities {s.modalities}")
        return PartFeatures(image_size=s.image_size, **kw), Preprocessed(rgb_s, xyz_s), latency

    def _extract_2d(self, rgb: np.ndarray, latency: dict) -> tuple[np.ndarray, np.ndarray]:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise InspectionError("shape", f"rgb must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
        t = time.perf_counter()
        # Resized once: the picture kept for maps is exactly what the encoder sees
        # (preprocess_rgb of an S x S frame resizes nothing).
        shown = resize_frame(pointcloud.pad_to_square(rgb), self.engine_2d.manifest.image_size)
        return shown, self._encode_picture(shown, latency, t)

    def _encode_picture(self, picture: np.ndarray, latency: dict, t: float) -> np.ndarray:
        """(P, n_layers, C) float16 patch features of an S x S uint8 picture through the 2D engine."""
        x = self.engine_2d.preprocess_rgb(picture)
        t = _timed(latency, "preprocess", t)
        grids = self.engine_2d.run(x)
        t = _timed(latency, "encode", t)
        z = l2_normalize(aggregate_2d(grids, self.settings.r_list))[0]
        _timed(latency, "aggregate", t)
        return z.astype(np.float16)

    def _groups(self, points: np.ndarray):
        """(centre_idx, centres, curvature, neighbourhood or None) of a normalized cloud.

        Point-MAE reads the IPG groups. FPFH reads the cloud around each centre
        itself, so it needs groups only for the curvature that 3D SNAMD consults,
        and plain KNN groups give the same curvature as IPG; with degree 1 alone
        (no SNAMD) the centres are all it needs.
        """
        s = self.settings
        if self.engine_3d is None and max(s.r_list_3d) == 1:
            centre_idx = pointcloud.farthest_point_sampling(points, s.centres())
            return centre_idx, points[centre_idx], np.zeros(len(centre_idx), np.float32), None
        groups = pointcloud.group_cloud(points, s.centres(), s.group_size, ipg=self.engine_3d is not None)
        return groups.centre_idx, groups.centres, groups.curvature, groups.neighbourhood

    def _extract_3d(self, xyz: np.ndarray, latency: dict) -> tuple[np.ndarray, dict]:
        s = self.settings
        if xyz.ndim != 3 or xyz.shape[2] != 3:
            raise InspectionError("shape", f"xyz must be (H, W, 3), got {xyz.shape}")
        t = time.perf_counter()
        try:
            organized = pointcloud.preprocess_organized(
            np.asarray(xyz, dtype=np.float32), s.image_size,
                remove_plane=s.remove_plane, clean=s.clean, plane_distance=s.plane_distance,
            )
        except ValueError as exc:  # empty foreground, no plane on the border, ...
            raise InspectionError("cloud", f"xyz: {exc}") from exc
        t = _timed(latency, "preprocess", t)
        fields = {}
        if s.encoder_3d == "normals" or s.normals_stream():
            zn = self._encode_picture(pointcloud.normal_image(organized), latency, t)
            if s.encoder_3d == "normals":
                # On the patch grid: patch i is centre i, and the 3D map is drawn as the 2D one is.
                return organized, {"z3": zn, "point2patch": np.arange(len(zn), dtype=np.int32), "grid": self.grid}
            fields = {"zn": zn, "grid": self.grid}  # both 3D encoders: the second stream, then FPFH below
            t = time.perf_counter()
        points, pixel_index = pointcloud.organized_to_flat(organized)
        need = max(s.centres(), s.group_size)
        if len(points) < need:
            raise InspectionError(
                "empty_foreground" if len(points) == 0 else "sparse_cloud",
                f"{len(points)} foreground points after preprocessing; the line needs at least "
                f"{need} ({s.centres()} groups of {s.group_size})",
            )
        points, _, _ = pointcloud.normalize_points(points)
        centre_idx, centres, curvature, neighbourhood = self._groups(points)
        t = _timed(latency, "preprocess", t)
        if self.engine_3d is None:  # FPFH
            feats = pointcloud.fpfh_features(points, centre_idx, s.fpfh_radii)
        else:
            feats = [f[0] for f in self.engine_3d.run(neighbourhood[None], centres[None])]
        t = _timed(latency, "encode", t)
        z3 = aggregate_3d([l2_normalize(f) for f in feats], centres, curvature, s.r_list_3d, s.pooling_3d)
        idw_index, idw_weight = idw_weights(centres, points)
        centre_pixels = pixel_index[centre_idx]
        _timed(latency, "aggregate", t)
        return organized, fields | {
            "z3": z3.astype(np.float16),
            "point2patch": point_to_patch(centre_pixels, (s.image_size,) * 2, self.grid).astype(np.int32),
            "pixel_index": pixel_index.astype(np.int32),
            "idw_index": idw_index,
            "idw_weight": idw_weight,
        }
