"""The rolling window of one product line, with incremental mutual scores.

The window keeps, per modality and layer, the per-reference minimum-distance
rows of every member: rows[a, :, b] = min distance of a's patches to part b.
When a part arrives, one distance block per member gives both its own rows and
its column in every member's rows (O(N) blocks); when a part leaves, its slot is
reused and its column no longer counts. Scores are then read off the rows, so
they always equal the batch functions (`mutual_scores`, and CAE for 2D+3D)
recomputed on the window's current contents, under the same matching rule:
global, or aligned (``match_radius``: fixtured parts, see scoring.aligned).

The distance work runs on the host (scoring.tiles, cache tiles on worker
threads) or, with ``device = "cuda:N"``, on a GPU: the features and rows then
stay there (CuPy) and only the scored part's rows come back to the host for
CAE. Aligned matching runs on the host.

Membership: a member is a reference (what the others are scored against) or
a candidate (a part waiting for its verdict, scored against the references
only). Candidates become references through ``admit``; the window keeps at
most ``capacity`` references, evicting the oldest one that is not pinned.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_runtime.inspection.device import array_module, on_device, parse_device, to_host
from edge_runtime.inspection.part import PartFeatures
from edge_runtime.inspection.pool import part_scores
from edge_runtime.scoring import DEFAULT_BUDGET, augment, interval_mean
from edge_runtime.scoring._checks import INTERVAL, check_interval
from edge_runtime.scoring.aligned import (
    CellLayout,
    cell_layout,
    cell_squared_min_distances,
    check_radius,
    fill_unmatched,
    grid_squared_min_distances,
)
from edge_runtime.scoring.tiles import GPU_BUDGET, active_width, distances, squared_min_distances


class LineWindow:
    """The references of one line (at most ``capacity``) and the candidates being decided.

    capacity : N references. modalities : ("2d",), ("3d",), ("2d", "3d") or
    ("2d", "3d", "3n") (the normals stream on the patch grid, see
    InspectionSettings.normals_stream); 2D+3D scores use cross-modal
    enhancement when ``cross_modal`` (pool.part_scores). interval :
    fraction of references averaged.
    budget : bytes of distance tile one worker holds at once (on a GPU: of one
        distance block; default DEFAULT_BUDGET on the host, GPU_BUDGET on a GPU).
    match_radius : None (global matching) or r: a patch meets only reference
        patches within r cells (3D centres by point2patch); parts need a grid.
    device : "cpu" or "cuda[:N]" (CuPy; global matching only).
    spare : room for candidates beyond the N references (slots = capacity + spare).
    """

    def __init__(self, capacity: int, modalities: Sequence[str], interval: float = INTERVAL, budget: int | None = None,
                 match_radius: int | None = None, device: str = "cpu", spare: int = 0, cross_modal: bool = True):
        if capacity < 2:
            raise ValueError(f"window capacity must be >= 2, got {capacity}")
        self.capacity = int(capacity)
        self.spare = int(spare)
        self.slots = self.capacity + self.spare
        self.modalities = tuple(modalities)
        self.interval = check_interval(interval)
        on_gpu = parse_device(device)[0] != "cpu"
        self.budget = int(budget or (GPU_BUDGET if on_gpu else DEFAULT_BUDGET))
        self.match_radius = None if match_radius is None else check_radius(match_radius)
        self.device = device
        if self.match_radius is not None and on_gpu:
            raise ValueError(f"aligned matching (match_radius) runs on the CPU, not on {device!r}")
        self._xp = array_module(device)
        self.cross_modal = bool(cross_modal)
        self._order: list[str] = []  # members, oldest first
        self._slot: dict[str, int] = {}
        self._references: set[str] = set()
        self._pinned: set[str] = set()  # references never evicted (golden parts, an operator's pins)
        self._parts: list[PartFeatures | None] = [None] * self.slots
        # modality -> (n_layers, slots, L, C + 2) float32 (on the window's device): members' features,
        # augmented once on arrival so each later arrival reads this contiguous buffer; aligned 2D keeps
        # them (n_layers, L, C + 2, slots), each cell's references one block (read through _members)
        self._right: dict = {}
        self._rows: dict = {}  # modality -> (n_layers, slots, L, slots) float32, same device
        # modality -> per layer, channels beyond which every part stored so far is zero (never lowered):
        # the host multiplies only those (zero-padded narrow layers cost their own width)
        self._width: dict[str, list[int]] = {}
        # aligned 3D: each member's centres are stored by cell (the kernel's gathers then read each reference
        # in runs); (slots, G) int64 their cells, and the stored order: stored centre t is the part's order[t]
        self._cells3: np.ndarray | None = None
        self._order3: np.ndarray | None = None
        self._grid: tuple[int, int] | None = None  # the parts' patch grid (aligned matching)

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, part: str) -> bool:
        return part in self._slot

    @property
    def members(self) -> list[str]:
        """Part ids (references and candidates), oldest first."""
        return list(self._order)

    @property
    def reference_ids(self) -> list[str]:
        """The references, oldest first."""
        return [p for p in self._order if p in self._references]

    @property
    def pinned(self) -> list[str]:
        return [p for p in self._order if p in self._pinned]

    def is_reference(self, part: str) -> bool:
        return part in self._references

    def part(self, part: str) -> PartFeatures:
        return self._parts[self._slot[part]]

    def add(self, part: str, features: PartFeatures, reference: bool = True, pinned: bool = False) -> str | None:
        """Add a part as a reference (evicting the oldest unpinned one when full) or as a candidate.

        Returns the evicted part id or None.
        """
        if part in self._slot:
            raise ValueError(f"part {part!r} is already in the window")
        missing = [m for m in self.modalities if not features.holds(m)]
        if missing:
            raise ValueError(f"part {part!r} lacks {', '.join(missing)} features the window needs")
        for m in self.modalities:
            self._check_shape(m, features.features(m))
        evicted = self._make_room() if reference else None
        if len(self._order) == self.slots:
            raise ValueError(f"the window has no room for candidate {part!r} ({self.spare} spare slots in use)")
        slot = next(s for s in range(self.slots) if self._parts[s] is None)
        others = np.array([self._slot[p] for p in self._order], dtype=np.int64)
        for m in self.modalities:
            self._insert(m, slot, others, features)
        self._parts[slot] = features
        self._slot[part] = slot
        self._order.append(part)
        if reference:
            self._references.add(part)
            if pinned:
                self.pin(part)
        return evicted

    def admit(self, part: str) -> str | None:
        """Make a candidate a reference; returns the reference evicted to make room, or None."""
        if part not in self._slot:
            raise KeyError(f"part {part!r} is not in the window")
        if part in self._references:
            return None
        evicted = self._make_room()
        self._references.add(part)
        return evicted

    def pin(self, part: str) -> None:
        """Keep a reference for good (it is never evicted)."""
        if part not in self._references:
            raise KeyError(f"part {part!r} is not a reference of this window")
        if part not in self._pinned and len(self._pinned) >= self.capacity - 1:
            raise ValueError(f"{len(self._pinned)} of the window's {self.capacity} references are pinned: "
                             "at least one must be free to follow the line")
        self._pinned.add(part)

    def _make_room(self) -> str | None:
        """Evict the oldest unpinned reference when the references are full."""
        if len(self._references) < self.capacity:
            return None
        evicted = next(p for p in self._order if p in self._references and p not in self._pinned)
        self.remove(evicted)
        return evicted

    def _insert(self, modality: str, slot: int, others: np.ndarray, features: PartFeatures) -> None:
        """Fill ``slot`` with the part's features: its rows and its column in the other members' rows."""
        z = features.features(modality)  # (L, n_layers, C)
        rows, xp = self._rows[modality], self._xp
        cells = self._cells(modality, features)
        layout = self._cell_layout(modality, cells, others)
        index = xp.asarray(others)
        with on_device(xp, self.device):
            rows[:, slot, :, slot] = np.inf  # a part is not its own reference
            if others.size:
                for layer in range(z.shape[1]):
                    to_refs, from_refs = self._distances(modality, z[:, layer], cells, layer, others, layout)
                    rows[layer, slot][:, index] = to_refs
                    rows[layer, index, :, slot] = from_refs
            self._store(modality, slot, z, cells)

    def _store(self, modality: str, slot: int, z: np.ndarray, cells: np.ndarray | None) -> None:
        """Keep z (L, n_layers, C) in ``slot`` as a reference: augmented, with its cells (3D, aligned: by cell)."""
        if cells is not None and modality == "3d":
            if self._cells3 is None:
                self._cells3 = np.zeros((self.slots, cells.size), np.int64)
                self._order3 = np.zeros((self.slots, cells.size), np.int64)
            order = np.argsort(cells, kind="stable")
            self._cells3[slot], self._order3[slot] = cells[order], order
            z = z[order]
        self._members(modality)[:, slot] = augment(z.transpose(1, 0, 2), "right", self._xp)
        widths = self._width.setdefault(modality, [0] * z.shape[1])
        widths[:] = [max(w, active_width(z[:, layer])) for layer, w in enumerate(widths)]

    def _cell_layout(self, modality: str, cells: np.ndarray | None, slots: np.ndarray) -> CellLayout | None:
        """Aligned 3D matching against the members in ``slots``: where each centre goes (the same for every layer)."""
        if cells is None or modality != "3d" or not slots.size:
            return None
        return cell_layout(cells, self._cells3, self._grid, self.match_radius, self._members(modality).shape[-1], slots)

    def _distances(self, modality: str, z: np.ndarray, cells: np.ndarray | None, layer: int,
                   slots: np.ndarray, layout: CellLayout | None = None) -> tuple:
        """z (L, C) against the members in ``slots``, one layer: (L, R) and (R, L2) distances.

        Global matching on the window's device; with cells (aligned matching) on the host, 3D by ``layout``.
        """
        xp, right = self._xp, self._members(modality)[layer]
        if xp is np:  # members and z are zero beyond width: those channels add nothing (the kernels take views)
            width = max(self._width[modality][layer], active_width(z))
            z, right = z[:, :width], right[..., : 2 + width]
        left = augment(z, "left", xp)
        if cells is None:
            return distances(*squared_min_distances(left, right, slots, self.budget, xp=xp), xp=xp)
        if self._by_cell(modality):  # one patch per cell: exactly the pairs in range, every slot at once (no copy)
            to_refs, from_refs = grid_squared_min_distances(left, right.transpose(1, 2, 0), self._grid,
                                                            self.match_radius, self.budget)
            return distances(to_refs[:, slots], from_refs[slots])
        to_refs, stored = cell_squared_min_distances(left, right, layout, self.budget)
        fill_unmatched(to_refs, stored, left, lambda j: right[slots[j]])
        from_refs = np.empty_like(stored)  # back in each member's own order of centres
        np.put_along_axis(from_refs, self._order3[slots], stored, axis=1)
        return distances(to_refs, from_refs)

    def _members(self, modality: str):
        """``modality``'s augmented members as (n_layers, slots, L, C + 2), a view of how they are kept:
        aligned 2D keeps them cell by cell, (n_layers, L, C + 2, slots), so its per-cell products each read
        one contiguous (C + 2, slots) block, about 2x faster at 33-128 channels than the slots' rows strided
        a whole part apart (docs/ARCHITECTURE.md)."""
        right = self._right[modality]
        return right.transpose(0, 3, 1, 2) if self._by_cell(modality) else right

    def _by_cell(self, modality: str) -> bool:
        return self.match_radius is not None and modality != "3d"

    def _cells(self, modality: str, features: PartFeatures) -> np.ndarray | None:
        """Each item's grid cell for aligned matching (``PartFeatures.cells``), None for global."""
        if self.match_radius is None:
            return None
        if features.grid is None:
            raise ValueError("aligned matching (match_radius) needs parts with a patch grid")
        grid = tuple(features.grid)
        if self._grid not in (None, grid):
            raise ValueError(f"part grid {grid} differs from the window's {self._grid}")
        self._grid = grid
        return features.cells(modality)

    def remove(self, part: str) -> None:
        """Drop a part; its column stops counting for every other member."""
        slot = self._slot.pop(part)
        self._order.remove(part)
        self._references.discard(part)
        self._pinned.discard(part)
        self._parts[slot] = None

    def _check_shape(self, modality: str, z: np.ndarray) -> None:
        l, n_layers, c = z.shape
        if modality not in self._right:
            xp = self._xp
            shape = (n_layers, l, c + 2, self.slots) if self._by_cell(modality) else (n_layers, self.slots, l, c + 2)
            with on_device(xp, self.device):
                self._right[modality] = xp.zeros(shape, dtype=xp.float32)
                self._rows[modality] = xp.full((n_layers, self.slots, l, self.slots), np.inf, dtype=xp.float32)
        elif (n_layers, l, c + 2) != (self._members(modality).shape[0],) + self._members(modality).shape[2:]:
            have = self._members(modality).shape
            raise ValueError(f"{modality} features of shape {z.shape} do not match the window's {(have[2], have[0], have[3] - 2)}")

    def references(self, part: str) -> np.ndarray:
        """Slots of ``part``'s references (every reference but itself, oldest first)."""
        return np.array([self._slot[p] for p in self.reference_ids if p != part], dtype=np.int64)

    def scores(self, part: str) -> dict[str, np.ndarray]:
        """Mutual scores of one member against the window's other references.

        Returns ``pool.part_scores``: {stream: (L_m,) float32}, per-layer scores averaged over
        layers; with 2D and 3D and ``cross_modal``, cross-modal enhanced. Needs >= 1 other
        reference (2 with several modalities).
        """
        refs = self.references(part)
        if refs.size < 1 or (len(self.modalities) > 1 and refs.size < 2):
            raise ValueError(f"window holds {refs.size} other references: too few to score")
        me = self._slot[part]
        with on_device(self._xp, self.device):  # only this part's rows leave the device
            rows = {m: to_host(self._rows[m][:, me][:, :, self._xp.asarray(refs)]) for m in self.modalities}
        return part_scores(rows, self._parts[me], self.interval, self.cross_modal)

    def query(self, features: PartFeatures, modality: str) -> np.ndarray:
        """Score a part that stays outside the window on one modality (no CAE).

        Returns (L,) float32: its mutual scores against every reference.
        """
        if not self._references:
            raise ValueError("window holds no references: nothing to score against")
        z = features.features(modality)
        self._check_shape(modality, z)
        members = np.array([self._slot[p] for p in self.reference_ids], dtype=np.int64)
        cells = self._cells(modality, features)
        layout = self._cell_layout(modality, cells, members)
        with on_device(self._xp, self.device):
            layers = [to_host(self._distances(modality, z[:, layer], cells, layer, members, layout)[0])
                      for layer in range(z.shape[1])]
        return np.mean([interval_mean(o, self.interval) for o in layers], axis=0, dtype=np.float32)

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that restore this window exactly (see ``from_state``)."""
        slots = np.array([self._slot[p] for p in self._order], dtype=np.int64)
        out: dict[str, np.ndarray] = {
            "window_members": np.array(self._order, dtype=str),
            "window_config": np.array([self.capacity, self.interval, self.budget,
                                       -1 if self.match_radius is None else self.match_radius, self.spare,
                                       self.cross_modal],
                                      dtype=np.float64),
            # per member: 0 candidate, 1 reference, 2 pinned reference
            "window_roles": np.array([int(p in self._references) + int(p in self._pinned) for p in self._order],
                                     dtype=np.int64),
            "window_modalities": np.array(self.modalities, dtype=str),
            "window_device": np.array(self.device),
        }
        for m in self.modalities:
            if m in self._rows:
                index = self._xp.asarray(slots)
                out[f"window_rows_{m}"] = to_host(self._rows[m][:, index][:, :, :, index])
        for i, p in enumerate(self._order):
            out.update(self._parts[self._slot[p]].to_arrays(f"window_part{i}_"))
        return out

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], device: str | None = None) -> "LineWindow":
        """The window ``state()`` saved, on ``device`` (default: the one it was saved from)."""
        # states before aligned matching hold 3 values, before candidates 4 (every member a reference),
        # before the CAE switch 5 (cross-modal on)
        saved = list(state["window_config"])
        capacity, interval, budget, radius, spare, cross_modal = saved + [-1, 0, 1][len(saved) - 3:]
        saved_device = str(state["window_device"]) if "window_device" in state else "cpu"
        window = cls(int(capacity), [str(m) for m in state["window_modalities"]], float(interval), int(budget),
                     None if radius < 0 else int(radius), device or saved_device, int(spare), bool(cross_modal))
        members = [str(p) for p in state["window_members"]]
        roles = state["window_roles"] if "window_roles" in state else np.ones(len(members), np.int64)
        window._references = {p for p, role in zip(members, roles) if role >= 1}
        window._pinned = {p for p, role in zip(members, roles) if role == 2}
        for i, p in enumerate(members):
            features = PartFeatures.from_arrays(state, f"window_part{i}_")
            for m in window.modalities:
                z = features.features(m)
                window._check_shape(m, z)
                with on_device(window._xp, window.device):
                    window._store(m, i, z, window._cells(m, features))
            window._parts[i] = features
            window._slot[p] = i
            window._order.append(p)
        n = len(members)
        for m in window.modalities:
            if n:
                with on_device(window._xp, window.device):
                    window._rows[m][:, :n, :, :n] = window._xp.asarray(state[f"window_rows_{m}"])
        return window
