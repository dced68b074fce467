"""The rolling window of one product line, with incremental mutual scores.

The window keeps, per modality and layer, the per-reference minimum-distance
rows of every member: rows[a, :, b] = min distance of a's patches to part b.
When a part arrives, one distance block per member gives both its own rows and
its column in every member's rows (O(N) blocks); when a part leaves, its slot is
reused and its column no longer counts. Scores are then read off the rows, so
they always equal the batch functions (`mutual_scores`, and CAE for 2D+3D)
recomputed on the window's current contents.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_runtime.inspection.part import PartFeatures
from edge_runtime.scoring import DEFAULT_BUDGET, augment, enhance, interval_mean, min_distances
from edge_runtime.scoring._checks import check_interval


class LineWindow:
    """The last ``capacity`` parts of one line.

    capacity : N. modalities : ("2d",), ("3d",) or ("2d", "3d"); 2D+3D scores
    use cross-modal enhancement when ``cross_modal``. interval : fraction of
    references averaged. budget : bytes of distance block materialised at once.
    """

    def __init__(self, capacity: int, modalities: Sequence[str], interval: float = 0.3, budget: int = DEFAULT_BUDGET,
                 cross_modal: bool = True):
        if capacity < 2:
            raise ValueError(f"window capacity must be >= 2, got {capacity}")
        self.capacity = int(capacity)
        self.modalities = tuple(modalities)
        self.interval = check_interval(interval)
        self.budget = budget
        self.cross_modal = bool(cross_modal)
        self._order: list[str] = []  # members, oldest first
        self._slot: dict[str, int] = {}
        self._parts: list[PartFeatures | None] = [None] * self.capacity
        # modality -> (n_layers, capacity, L, C + 2) float32: members' features, augmented once
        # on arrival so each later arrival is one GEMM against this contiguous buffer
        self._right: dict[str, np.ndarray] = {}
        self._rows: dict[str, np.ndarray] = {}  # modality -> (n_layers, capacity, L, capacity) float32

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, part: str) -> bool:
        return part in self._slot

    @property
    def members(self) -> list[str]:
        """Part ids, oldest first."""
        return list(self._order)

    def part(self, part: str) -> PartFeatures:
        return self._parts[self._slot[part]]

    def add(self, part: str, features: PartFeatures) -> str | None:
        """Add a part (evicting the oldest when full). Returns the evicted part id or None."""
        if part in self._slot:
            raise ValueError(f"part {part!r} is already in the window")
        missing = [m for m in self.modalities if m not in features.modalities]
        if missing:
            raise ValueError(f"part {part!r} lacks {', '.join(missing)} features the window needs")
        for m in self.modalities:
            self._check_shape(m, features.features(m))
        evicted = self._order[0] if len(self._order) == self.capacity else None
        if evicted is not None:
            self.remove(evicted)
        slot = next(s for s in range(self.capacity) if self._parts[s] is None)
        others = np.array([self._slot[p] for p in self._order], dtype=np.int64)
        for m in self.modalities:
            self._insert(m, slot, others, features.features(m))
        self._parts[slot] = features
        self._slot[part] = slot
        self._order.append(part)
        return evicted

    def _insert(self, modality: str, slot: int, others: np.ndarray, z: np.ndarray) -> None:
        """Fill ``slot`` with z (L, n_layers, C): its rows and its column in the other members' rows."""
        right, rows = self._right[modality], self._rows[modality]
        rows[:, slot, :, slot] = np.inf  # a part is not its own reference
        for layer in range(z.shape[1]):
            if others.size:
                # Against the whole buffer: no gather copy; unused slots' columns are never read.
                to_refs, from_refs = min_distances(z[:, layer], right[layer], self.budget, augmented=True)
                rows[layer, slot][:, others] = to_refs[:, others]
                rows[layer, others, :, slot] = from_refs[others]
            right[layer, slot] = augment(z[:, layer], "right")

    def remove(self, part: str) -> None:
        """Drop a part; its column stops counting for every other member."""
        slot = self._slot.pop(part)
        self._order.remove(part)
        self._parts[slot] = None

    def _check_shape(self, modality: str, z: np.ndarray) -> None:
        l, n_layers, c = z.shape
        if modality not in self._right:
            self._right[modality] = np.zeros((n_layers, self.capacity, l, c + 2), dtype=np.float32)
            self._rows[modality] = np.full((n_layers, self.capacity, l, self.capacity), np.inf, dtype=np.float32)
        elif (n_layers, l, c + 2) != (self._right[modality].shape[0],) + self._right[modality].shape[2:]:
            have = self._right[modality].shape
            raise ValueError(f"{modality} features of shape {z.shape} do not match the window's {(have[2], have[0], have[3] - 2)}")

    def references(self, part: str) -> np.ndarray:
        """Slots of ``part``'s references (every other member, oldest first)."""
        me = self._slot[part]
        return np.array([self._slot[p] for p in self._order if self._slot[p] != me], dtype=np.int64)

    def scores(self, part: str) -> dict[str, np.ndarray]:
        """Mutual scores of one member against the rest of the window.

        Returns {modality: (L_m,) float32}, per-layer scores averaged over layers;
        with 2D and 3D and ``cross_modal``, cross-modal enhanced. Needs >= 2 members (3 for 2D+3D).
        """
        refs = self.references(part)
        if refs.size < 1 or (len(self.modalities) == 2 and refs.size < 2):
            raise ValueError(f"window holds {len(self)} parts: too few to score")
        me = self._slot[part]
        rows = {m: self._rows[m][:, me][:, :, refs] for m in self.modalities}  # (n_layers, L, R)
        if len(self.modalities) == 1 or not self.cross_modal:
            return {m: np.mean([interval_mean(o, self.interval) for o in rows[m]], axis=0, dtype=np.float32)
                    for m in self.modalities}
        p2p = self._parts[me].point2patch
        per_layer = [enhance(o2, o3, p2p, self.interval) for o2, o3 in zip(rows["2d"], rows["3d"])]
        return {
            "2d": np.mean([s2 for s2, _ in per_layer], axis=0, dtype=np.float32),
            "3d": np.mean([s3 for _, s3 in per_layer], axis=0, dtype=np.float32),
        }

    def query(self, features: PartFeatures, modality: str) -> np.ndarray:
        """Score a part that stays outside the window on one modality (no CAE).

        Returns (L,) float32: its mutual scores against every member.
        """
        if len(self) < 1:
            raise ValueError("window is empty: nothing to score against")
        z = features.features(modality)
        self._check_shape(modality, z)
        members = [self._slot[p] for p in self._order]
        right = self._right[modality]
        layers = [min_distances(z[:, layer], right[layer], self.budget, augmented=True)[0][:, members]
                  for layer in range(z.shape[1])]
        return np.mean([interval_mean(o, self.interval) for o in layers], axis=0, dtype=np.float32)

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that restore this window exactly (see ``from_state``)."""
        slots = np.array([self._slot[p] for p in self._order], dtype=np.int64)
        out: dict[str, np.ndarray] = {
            "window_members": np.array(self._order, dtype=str),
            "window_config": np.array([self.capacity, self.interval, self.budget, self.cross_modal], dtype=np.float64),
            "window_modalities": np.array(self.modalities, dtype=str),
        }
        for m in self.modalities:
            if m in self._rows:
                out[f"window_rows_{m}"] = self._rows[m][:, slots][:, :, :, slots]
        for i, p in enumerate(self._order):
            out.update(self._parts[self._slot[p]].to_arrays(f"window_part{i}_"))
        return out

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> "LineWindow":
        capacity, interval, budget, cross_modal = state["window_config"]
        window = cls(int(capacity), [str(m) for m in state["window_modalities"]], float(interval), int(budget),
                     bool(cross_modal))
        members = [str(p) for p in state["window_members"]]
        for i, p in enumerate(members):
            features = PartFeatures.from_arrays(state, f"window_part{i}_")
            for m in window.modalities:
                z = features.features(m)
                window._check_shape(m, z)
                window._right[m][:, i] = augment(z.transpose(1, 0, 2), "right")
            window._parts[i] = features
            window._slot[p] = i
            window._order.append(p)
        n = len(members)
        for m in window.modalities:
            if n:
                window._rows[m][:, :n, :, :n] = state[f"window_rows_{m}"]
        return window
