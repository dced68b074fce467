"""Inspection settings of one product line: what a line profile says about scoring.

The station's TOML profile and `musc-edge eval` both build an
`InspectionSettings`; every check of those values lives here.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from edge_runtime.inspection.alerts import AlertSettings
from edge_runtime.inspection.device import parse_device
from edge_runtime.inspection.threshold import check_threshold_table
from edge_runtime.scoring._checks import INTERVAL, MAP_SIGMA
from edge_runtime.scoring.aligned import check_radius

MODALITIES = ("2d", "3d")
FUSIONS = ("sum", "window")
# A 2D+3D part's image score: the larger of its 2D and 3D peaks on the window scale, or MuSc-V2's
# maximum of the fused map. Over 11 sets (44 lines, 3 sets hard) fused image AUROC 90.0 -> 90.7,
# higher on 9 sets, appearance defects +1.5; the fused map, and so AUPRO, is the same
# (docs/ABLATION.md, "Fused image score").
FUSED_SCORES = ("modality", "map")

# A line that scores 2D alone (docs/ABLATION.md, "Why 2D is below the baseline"): the default
# encoder at strides 4/8/16, whose finer maps localise better (2D AUPRO +1.0 over 32 lines); with
# 3D the catalogue's strides 8/16/32 fuse better with FPFH (stride 4 costs 2D+3D AUPRO on 29 of 32).
STAGES_2D_ALONE = (1, 2, 3)
# 3D centres per part. A line with 2D takes 1024 (the fused defaults were measured with them). A
# line that scores 3D alone with FPFH takes the baseline's 784, scored by the map maximum: the one
# 3D rule never below the baseline on a set; 1024 centres are 1 point above it on average, below
# it on 3 of 10 sets, at the same cost (docs/ABLATION.md, "A 3D-only line").
GROUPS = 1024
GROUPS_3D_ALONE = 784
# The weight-free 3D encoders (any other encoder_3d is a manifest path). "normals" draws the cloud's
# surface normals and encodes them with the line's 2D encoder, on its patch grid: alone, on 7 held-out
# sets, fused AUPRO fell below the baseline's on 2 and a replay 4 points below batch on one. BOTH_3D,
# the default, scores a 2D+3D line with both: FPFH at the centres and the normals picture as a second
# 3D stream ("3n"), each fused with its own cross-modal 2D scores, the two fused maps averaged: fused
# AUROC / AUPRO 87.6 / 94.2 -> 89.2 / 94.9 over FPFH alone on those sets, above it on all 7, at 1.65x
# the cost per part (docs/ABLATION.md, "Both 3D encoders"). A 3D-only line with BOTH_3D scores FPFH
# alone (the baseline's 3D rule).
BOTH_3D = "fpfh+normals"
ENCODERS_3D = ("fpfh", "normals", BOTH_3D)

# The TOML sections of a line profile that map onto settings fields.
_SECTIONS = ("line", "encoders", "scoring", "pointcloud", "threshold", "output", "guard", "alerts")
# Sections read whole as tables by their own module (inspection.policies, inspection.alerts).
_TABLES = ("threshold", "alerts")


@dataclass(frozen=True)
class InspectionSettings:
    """How one product line is scored.

    modalities: which sensors the line needs, a subset of ("2d", "3d").
    encoder_2d: a manifest path, or "default" (EfficientNet-Lite0, exported on first use).
    encoder_3d: "fpfh" (weight-free descriptors at the group centres), "normals"
    (the cloud's surface normals drawn as an image and encoded by the line's 2D
    encoder, on its patch grid), "fpfh+normals" (both on a 2D+3D line, see
    ``normals_stream``; FPFH on a 3D-only line), or a manifest path (Point-MAE).
    window: N, the references every part is scored against (the last parts
    believed good); min_window: with fewer references verdicts are
    inconclusive (mutual scoring needs >= 5 references).
    decision_delay: later parts a verdict waits for (0 = decide on arrival).
    r_list / r_list_3d: SNAMD degrees of the 2D patches / 3D centres ((1,) = none).
    fpfh_radii: FPFH layer radii (relative to the unit-radius cloud), one per 2D layer.
    cae: cross-modal anomaly enhancement for 2D+3D; rscon: re-scoring with a
    constrained neighbourhood of the fused image scores (off: the image score
    is the map maximum); rscon_alone: RsCon on single-modality scores too (a
    line that scores 2D or 3D alone, or a part decided on one modality), as
    MuSc-V2 does (off by default: on CNN stages it is worth -0.1 to -0.3 points
    of 2D AUROC, on FPFH -1.7 to +1.8 of 3D; docs/ABLATION.md).
    fusion: how 2D and 3D maps are summed: "sum" as they are (MuSc-V2), or
    "window" each put on the scale of the window itself first ((map - floor) /
    (peak - floor), floor and peak the window's median patch score and median
    image score of that modality), so a line, a replay and a batch use the same scale.
    fused_score: a 2D+3D part's image score (before RsCon): "modality", the larger of
    its 2D and 3D peaks, or "map", the fused map's maximum (MuSc-V2); see maps.fuse.
    match_radius: None (global matching) or r >= 0 (aligned matching for
    fixtured parts: a patch meets only reference patches within r cells).
    device: "cpu", or "cuda" / "cuda:N": the window's distance work on that GPU
    (CuPy) and the encoders on ONNX Runtime's GPU providers (a WARNING when missing).
    threshold: the [threshold] table, read by inspection.policies.
    guard ([guard] enabled): only parts decided ok become references, ng parts
    go to a quarantine of ``quarantine`` parts; off, every part joins (plain
    MuSc streaming). references ([guard] references): a folder of known-good
    parts (MVTec 3D-AD ``train/good`` layout) pinned in the window at start.
    alerts: the [alerts] table, read by inspection.alerts.

    The defaults are the embedded profile (EfficientNet-Lite0 + FPFH), chosen by
    the ablation in docs/ABLATION.md; `PAPER` holds MuSc-V2's own choices.
    """

    modalities: tuple[str, ...] = ("2d", "3d")
    allow_partial: bool = True
    encoder_2d: str = "default"
    encoder_3d: str = BOTH_3D
    image_size: int = 224
    # SNAMD is a no-op on raw CNN stages (norms 20-60: the neighbour weights
    # exp(-||f(n) - f(c)||) vanish), and on FPFH it lowers 3D AUPRO: degree 1 only.
    r_list: tuple[int, ...] = (1,)
    r_list_3d: tuple[int, ...] = (1,)
    fpfh_radii: tuple[float, ...] = (0.025, 0.05, 0.1)
    cae: bool = True
    rscon: bool = True
    rscon_alone: bool = False
    fusion: str = "window"
    fused_score: str = FUSED_SCORES[0]
    pooling_3d: str = "channel"
    window: int = 64
    min_window: int = 8
    decision_delay: int = 0
    interval: float = INTERVAL
    match_radius: int | None = None
    device: str = "cpu"
    k_list: tuple[int, ...] = (1, 7)
    groups: int | None = None
    group_size: int = 64
    remove_plane: bool = True
    plane_distance: float = 0.005
    clean: bool = True
    threshold: dict = field(default_factory=lambda: {"policy": "mad"})
    map_output: bool = False
    map_sigma: float = MAP_SIGMA
    guard: bool = True
    quarantine: int = 32
    references: str | None = None
    alerts: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        mods = tuple(self.modalities)
        if not mods or any(m not in MODALITIES for m in mods) or len(set(mods)) != len(mods):
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {mods!r}")
        object.__setattr__(self, "modalities", tuple(m for m in MODALITIES if m in mods))
        object.__setattr__(self, "r_list", tuple(int(r) for r in self.r_list))
        object.__setattr__(self, "r_list_3d", tuple(int(r) for r in self.r_list_3d))
        object.__setattr__(self, "fpfh_radii", tuple(float(r) for r in self.fpfh_radii))
        object.__setattr__(self, "k_list", tuple(int(k) for k in self.k_list))
        if self.image_size < 16 or self.image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8 and >= 16, got {self.image_size}")
        if not self.r_list or any(r < 1 or r % 2 == 0 for r in self.r_list):
            raise ValueError(f"r_list must hold odd degrees >= 1, got {self.r_list}")
        if not self.r_list_3d or any(r < 1 for r in self.r_list_3d):
            raise ValueError(f"r_list_3d must hold degrees >= 1, got {self.r_list_3d}")
        if not self.fpfh_radii or any(not 0 < r <= 1 for r in self.fpfh_radii) or list(self.fpfh_radii) != sorted(set(self.fpfh_radii)):
            raise ValueError(f"fpfh_radii must be increasing radii in (0, 1], got {self.fpfh_radii}")
        for name in ("cae", "rscon", "rscon_alone"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.fused_score not in FUSED_SCORES:
            raise ValueError(f"fused_score must be one of {FUSED_SCORES}, got {self.fused_score!r}")
        if self.pooling_3d not in ("channel", "reference"):
            raise ValueError(f"pooling_3d must be 'channel' or 'reference', got {self.pooling_3d!r}")
        if self.min_window < 5:
            raise ValueError(f"min_window must be >= 5 (mutual scoring needs 5 references), got {self.min_window}")
        if self.window < self.min_window:
            raise ValueError(f"window ({self.window}) must be >= min_window ({self.min_window})")
        if self.decision_delay < 0 or self.decision_delay >= self.window:
            raise ValueError(f"decision_delay must be in [0, window), got {self.decision_delay}")
        if not 0.0 < self.interval <= 1.0:
            raise ValueError(f"interval must be in (0, 1], got {self.interval}")
        if self.match_radius is not None:
            check_radius(self.match_radius)
            if parse_device(self.device)[0] != "cpu":
                raise ValueError(f"match_radius (aligned matching) runs on the CPU; device is {self.device!r}")
        parse_device(self.device)
        if not self.k_list or any(k < 1 for k in self.k_list):
            raise ValueError(f"k_list must hold positive neighbour counts, got {self.k_list}")
        if self.centres() < 8 or self.group_size < 8:
            raise ValueError(f"groups and group_size must be >= 8, got {self.groups}, {self.group_size}")
        if self.plane_distance <= 0:
            raise ValueError(f"plane_distance must be > 0 metres, got {self.plane_distance}")
        policy = check_threshold_table(self.threshold)
        if policy.params.get("margin") and not self.window_scaled():
            raise ValueError("[threshold] margin applies to scores on the window scale, where a typical part "
                             "scores about 1 (a 2D+3D line with fusion = 'window' and fused_score = 'modality'); "
                             f"this line scores {'+'.join(self.modalities)} with fusion {self.fusion!r} and "
                             f"fused_score {self.fused_score!r}: leave margin out")
        if isinstance(self.quarantine, bool) or not isinstance(self.quarantine, int) or self.quarantine < 0:
            raise ValueError(f"[guard] quarantine must be an integer >= 0, got {self.quarantine!r}")
        AlertSettings.from_table(self.alerts)  # names a bad key or value

    @classmethod
    def from_profile(cls, profile: dict) -> "InspectionSettings":
        """Build from a parsed line profile: sections [line], [encoders], [scoring],
        [pointcloud], [threshold], [output]. Unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        renames = {("encoders", "rgb"): "encoder_2d", ("encoders", "xyz"): "encoder_3d",
                   ("output", "map"): "map_output", ("guard", "enabled"): "guard"}
        guard_keys = {"guard", "quarantine", "references"}
        values: dict = {}
        unknown = []
        for section, table in profile.items():
            if section not in _SECTIONS:
                continue  # other sections (e.g. [stream]) belong to the station
            if section in _TABLES:
                values[section] = dict(table)
                continue
            for key, value in table.items():
                name = renames.get((section, key), key)
                if name in ("name",) and section == "line":
                    continue
                if name not in known or (section == "guard") != (name in guard_keys):
                    unknown.append(f"[{section}] {key}")
                    continue
                values[name] = tuple(value) if isinstance(value, list) else value
        if unknown:
            raise ValueError("unknown profile keys: " + ", ".join(unknown))
        return cls(**values)

    def rescores(self, key: str) -> bool:
        """Whether RsCon re-scores the image scores of ``key`` ("2d", "3d" or "fused")."""
        return self.rscon and (key == "fused" or self.rscon_alone)

    def centres(self) -> int:
        """3D centres per part: ``groups``, or where that is None the line's default
        (GROUPS_3D_ALONE on a line that scores 3D alone with FPFH, else GROUPS)."""
        if self.groups is not None:
            return self.groups
        return GROUPS_3D_ALONE if self.modalities == ("3d",) and self.encoder_3d in ("fpfh", BOTH_3D) else GROUPS

    def window_scaled(self) -> bool:
        """Whether a full part's score is on the window scale, a typical part about 1: 2D+3D, fusion
        "window", the larger modality peak. Otherwise it is a raw distance (one modality, the plain
        sum) or a sum of two window-scaled peaks (fused_score "map")."""
        return self.modalities == ("2d", "3d") and self.fusion == "window" and self.fused_score == "modality"

    def normals_stream(self) -> bool:
        """Whether the window scores a second 3D stream, "3n": the normals picture's features on the
        patch grid (``encoder_3d = "fpfh+normals"`` on a 2D+3D line)."""
        return self.encoder_3d == BOTH_3D and self.modalities == ("2d", "3d")

    def window_modalities(self) -> tuple[str, ...]:
        """The feature sets the line's window keeps: its modalities, and "3n" with ``normals_stream``."""
        return self.modalities + (("3n",) if self.normals_stream() else ())

    def default_stages(self) -> tuple[int, ...] | None:
        """Stages of the default 2D encoder for this line: STAGES_2D_ALONE when it scores 2D
        alone, else None (the catalogue's)."""
        return STAGES_2D_ALONE if self.modalities == ("2d",) else None

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def digest(self) -> str:
        """Short, stable digest of these settings (the verdict's `profile` field)."""
        canon = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:16]


# MuSc-V2's own choices where the embedded defaults differ (`musc-edge eval --preset paper`):
# SNAMD at degrees 1/3/5 in both modalities, CAE, RsCon (2D too), maps summed as they are, the
# fused map's maximum as the image score.
PAPER: dict = {"r_list": (1, 3, 5), "r_list_3d": (1, 3, 5), "cae": True, "rscon": True, "rscon_alone": True,
               "fusion": "sum", "fused_score": "map"}
