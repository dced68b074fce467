"""What the window keeps of one part: its aggregated features and how to paint its maps."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

_PAINT_3D = ("pixel_index", "idw_index", "idw_weight")  # how centre scores reach the pixels
_ARRAYS = ("z2", "z3", "point2patch") + _PAINT_3D + ("zn",)  # what persistence keeps
_FEATURES = {"2d": "z2", "3d": "z3", "3n": "zn"}  # each feature set's field


@dataclass(frozen=True)
class PartFeatures:
    """Aggregated, normalized features of one part, in the preprocessed S x S frame.

    z2 : (P, n_layers, C2) float16, 2D patch features (row-major grid ``grid``), or None.
    z3 : (G, n_layers, C3) float16, 3D centre features, or None.
    grid : (h, w) 2D patch grid; image_size : S.
    point2patch : (G,) int32, 2D patch of each centre (when z3 is set).
    pixel_index : (Q,) int32, pixels (row * S + col) of the foreground points.
    idw_index : (Q, 3) int32 and idw_weight : (Q, 3) float32: each foreground
        point's 3 nearest centres and inverse-distance weights (rows sum to 1).
    3D features on the patch grid (the "normals" encoder: G = h * w, centre i
    is patch i) have no pixel_index, idw_index or idw_weight: their map is
    drawn as the 2D one is (``on_grid_3d``).
    zn : (P, n_layers, C2) float16 or None, with z3: the normals picture's
        features on the patch grid, a second 3D stream ("3n", the
        "fpfh+normals" encoder); the part's 3D modality holds z3 and zn.
    """

    image_size: int
    grid: tuple[int, int] | None = None
    z2: np.ndarray | None = None
    z3: np.ndarray | None = None
    point2patch: np.ndarray | None = None
    pixel_index: np.ndarray | None = None
    idw_index: np.ndarray | None = None
    idw_weight: np.ndarray | None = None
    zn: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.z2 is None and self.z3 is None:
            raise ValueError("a part needs 2D or 3D features, got neither")
        if self.z2 is not None:
            if self.grid is None or self.z2.ndim != 3 or self.z2.shape[0] != self.grid[0] * self.grid[1]:
                raise ValueError(f"z2 shape {getattr(self.z2, 'shape', None)} does not match grid {self.grid}")
        if self.z3 is not None:
            if self.z3.ndim != 3:
                raise ValueError(f"z3 must be (G, n_layers, C), got {self.z3.shape}")
            painted = [getattr(self, n) is not None for n in _PAINT_3D]
            if any(painted) and not all(painted):
                raise ValueError(f"3D features need all of {_PAINT_3D} or none (on the patch grid)")
            if self.on_grid_3d and (self.grid is None or self.z3.shape[0] != self.grid[0] * self.grid[1]):
                raise ValueError(f"3D features without {_PAINT_3D} sit on the patch grid: z3 has "
                                 f"{self.z3.shape[0]} rows for grid {self.grid}")
        if self.zn is not None and (self.z3 is None or self.grid is None or self.zn.ndim != 3
                                    or self.zn.shape[0] != self.grid[0] * self.grid[1]):
            raise ValueError(f"zn (normals on the patch grid, with z3) of shape {getattr(self.zn, 'shape', None)} "
                             f"does not match grid {self.grid}")

    @property
    def on_grid_3d(self) -> bool:
        """Whether the 3D features sit on the 2D patch grid (no per-point painting)."""
        return self.z3 is not None and self.pixel_index is None

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m, z in (("2d", self.z2), ("3d", self.z3)) if z is not None)

    def holds(self, modality: str) -> bool:
        """Whether the part has features of "2d", "3d" or "3n" (the normals stream)."""
        return getattr(self, _FEATURES[modality]) is not None

    def features(self, modality: str) -> np.ndarray:
        """The features of "2d", "3d" or "3n" (the normals stream)."""
        z = getattr(self, _FEATURES[modality])
        if z is None:
            raise ValueError(f"part has no {modality} features")
        return z

    def cells(self, modality: str) -> np.ndarray:
        """(L_m,) int64: the patch-grid cell of each item of ``features(modality)``.

        3D centres sit at ``point2patch``; the 2D patches and the normals stream
        ("3n") are one item per patch, in grid order.
        """
        z = self.features(modality)
        if modality == "3d":
            return np.asarray(self.point2patch, dtype=np.int64)
        return np.arange(z.shape[0])

    def only(self, modalities) -> "PartFeatures":
        """The same part with only the given modalities' features."""
        keep3 = "3d" in modalities
        return dataclasses.replace(
            self,
            z2=self.z2 if "2d" in modalities else None,
            **{n: getattr(self, n) if keep3 else None for n in _ARRAYS[1:]},
        )

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """Flat arrays for persistence (``np.savez``); ``from_arrays`` reverses it."""
        out = {f"{prefix}image_size": np.int64(self.image_size)}
        if self.grid is not None:
            out[f"{prefix}grid"] = np.asarray(self.grid, dtype=np.int64)
        for name in _ARRAYS:
            value = getattr(self, name)
            if value is not None:
                out[prefix + name] = value
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> "PartFeatures":
        get = lambda n: arrays.get(prefix + n)  # noqa: E731
        grid = get("grid")
        return cls(
            image_size=int(get("image_size")),
            grid=None if grid is None else (int(grid[0]), int(grid[1])),
            **{n: get(n) for n in _ARRAYS},
        )
