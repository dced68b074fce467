"""Properties of the scoring functions that hold for any input."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.scoring import (
    aggregate_2d,
    aggregate_3d,
    interpolate_3d,
    l2_normalize,
    mutual_scores,
    mutual_scores_multimodal,
    rank_replace,
    rescore,
    upsample_2d,
)

FAST = settings(max_examples=25, deadline=None)


@FAST
@given(seed=st.integers(0, 2**31), n=st.integers(1, 300), levels=st.sampled_from([3, 50, 0]))
def test_stable_order_is_the_stable_argsort(seed, n, levels):
    from edge_runtime.scoring._order import stable_order

    rng = np.random.default_rng(seed)
    x = rng.normal(size=n).astype(np.float32)
    if levels:  # few distinct values: many ties
        x = np.round(x * levels) / levels
    x[rng.random(n) < 0.1] = -0.0  # ties between -0.0 and 0.0 as well
    x[rng.random(n) < 0.05] = np.inf
    np.testing.assert_array_equal(stable_order(x), np.argsort(x, kind="stable"))


def test_stable_order_of_a_window_sized_array_with_neighbouring_floats():
    """Values one ulp apart (equal high halves of the key), ties and signs, at CAE's sizes (R x L)."""
    from edge_runtime.scoring._order import stable_order

    rng = np.random.default_rng(3)
    base = rng.normal(size=700).astype(np.float32)
    x = np.concatenate([base, np.nextafter(base, np.float32(np.inf)), -base, base[::-1], np.zeros(50, np.float32)])
    x = np.tile(x, 30)[rng.permutation(30 * x.size)]
    np.testing.assert_array_equal(stable_order(x), np.argsort(x, kind="stable"))


@FAST
@given(seed=st.integers(0, 2**31), n=st.integers(1, 200))
def test_rank_replace_gives_src_values_in_tgt_order(seed, n):
    rng = np.random.default_rng(seed)
    src, tgt = rng.normal(size=n).astype(np.float32), np.round(rng.normal(size=n) * 4).astype(np.float32)
    out = rank_replace(src, tgt)
    want = np.empty(n, np.float32)
    want[np.argsort(tgt, kind="stable")] = np.sort(src)
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(rank_replace(src, tgt.astype(np.float64)), want)  # other dtypes: same rule


def _pool(seed, n, l=12, c=8):
    return l2_normalize(np.random.default_rng(seed).normal(size=(n, l, c)).astype(np.float32))


@FAST
@given(seed=st.integers(0, 2**31), n=st.integers(2, 9), perm_seed=st.integers(0, 2**31))
def test_scores_equivariant_to_sample_order(seed, n, perm_seed):
    z = _pool(seed, n)
    perm = np.random.default_rng(perm_seed).permutation(n)
    np.testing.assert_allclose(mutual_scores(z)[perm], mutual_scores(z[perm]), atol=1e-6)


@FAST
@given(seed=st.integers(0, 2**31), n=st.integers(5, 10))
def test_planted_outlier_patch_gets_the_top_score(seed, n):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(12, 8)).astype(np.float32)
    z = base[None] + 0.05 * rng.normal(size=(n, 12, 8)).astype(np.float32)
    z[n // 2, 5] = rng.normal(size=8) * 5  # one patch unlike any other
    s = mutual_scores(l2_normalize(z))
    assert np.unravel_index(np.argmax(s), s.shape) == (n // 2, 5)


@FAST
@given(seed=st.integers(0, 2**31), n=st.integers(2, 6))
def test_no_nan_for_two_or_more_samples(seed, n):
    assert np.isfinite(mutual_scores(_pool(seed, n))).all()


@FAST
@given(seed=st.integers(0, 2**31))
def test_inputs_are_never_mutated(seed):
    rng = np.random.default_rng(seed)
    z = _pool(seed, 6).astype(np.float16)
    grids = [rng.normal(size=(2, 5, 5, 4)).astype(np.float32)]
    feats, centres, curv = [rng.normal(size=(10, 4)).astype(np.float32)], rng.normal(size=(10, 3)), rng.random(10) * 0.02
    z3, p2p = _pool(seed + 1, 6, l=10), rng.integers(0, 12, size=(6, 10))
    scores, k_list = rng.random(6).astype(np.float32), [7]
    args = [z, grids[0], feats[0], centres, curv, z3, p2p, scores]
    before = [a.copy() for a in args]
    mutual_scores(z)
    aggregate_2d(grids)
    aggregate_3d(feats, centres, curv)
    mutual_scores_multimodal(z, z3, p2p)
    rescore(scores, z[:, 0].astype(np.float32), k_list)
    for a, b in zip(args, before):
        np.testing.assert_array_equal(a, b)
    assert k_list == [7]


def test_float16_storage_matches_float32():
    z = _pool(3, 8)
    np.testing.assert_allclose(mutual_scores(z.astype(np.float16)), mutual_scores(z), atol=2e-3)


def test_multi_layer_is_mean_of_layers():
    z = np.stack([_pool(1, 6), _pool(2, 6)], axis=2)  # (N, L, 2, C)
    expect = (mutual_scores(z[:, :, 0]) + mutual_scores(z[:, :, 1])) / 2
    np.testing.assert_allclose(mutual_scores(z), expect, atol=1e-6)


def test_layers_of_different_width_are_zero_padded():
    rng = np.random.default_rng(0)
    grids = [rng.normal(size=(2, 4, 4, 3)), rng.normal(size=(2, 4, 4, 5))]
    out = aggregate_2d(grids, (1, 3))
    assert out.shape == (2, 16, 2, 5)
    assert np.all(out[:, :, 0, 3:] == 0)
    np.testing.assert_allclose(out[:, :, 0, :3], aggregate_2d(grids[:1], (1, 3))[:, :, 0], atol=1e-6)


def test_rescore_zero_salient_feature_keeps_its_own_score():
    scores = np.array([0.1, 0.5, 0.9, 0.3], dtype=np.float32)
    salient = l2_normalize(np.random.default_rng(0).normal(size=(4, 5)))
    salient[2] = 0
    out = rescore(scores, salient, (1, 3))
    assert np.isfinite(out).all()
    assert out[2] == pytest.approx(1.0)  # its own min-max normalized score, for every k


def test_upsample_corners_keep_grid_values():
    g = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    up = upsample_2d(g, (7, 10))
    assert up.shape == (1, 7, 10)
    assert up[0, 0, 0] == g[0, 0, 0] and up[0, -1, -1] == g[0, -1, -1]
    assert up[0, 0, -1] == g[0, 0, -1] and up[0, -1, 0] == g[0, -1, 0]


def test_interpolate_3d_puts_scores_on_foreground_pixels_only():
    centres = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float32)
    points = np.array([[0, 0, 0], [1, 0, 0]], dtype=np.float32)
    m = interpolate_3d(np.array([1.0, 2.0, 3.0]), centres, points, np.array([0, 5]), (3, 3), sigma=0)
    assert m[0, 0] == pytest.approx(1.0, abs=1e-5) and m[1, 2] == pytest.approx(2.0, abs=1e-5)
    assert np.count_nonzero(m) == 2


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: mutual_scores(np.zeros((4, 5))), "dimensions"),
        (lambda: mutual_scores(_pool(0, 1)), "at least 2 samples"),
        (lambda: mutual_scores(np.full((3, 4, 2), np.nan)), "NaN"),
        (lambda: mutual_scores(_pool(0, 4), interval=0), "interval"),
        (lambda: aggregate_2d([np.zeros((1, 4, 4, 2)), np.zeros((1, 3, 4, 2))]), "expected"),
        (lambda: aggregate_2d([np.zeros((1, 4, 4, 2))], (2,)), "odd"),
        (lambda: aggregate_3d([np.zeros((4, 2))], np.zeros((4, 2)), np.zeros(4)), r"\(G, 3\)"),
        (lambda: rescore(np.zeros(3), np.zeros((4, 2))), "rows"),
        (lambda: rescore(np.zeros(3), np.zeros((3, 2)), [0]), ">= 1"),
        (lambda: mutual_scores_multimodal(_pool(0, 4), _pool(1, 5), np.zeros((4, 12), int)), "samples"),
        (lambda: mutual_scores_multimodal(_pool(0, 4), _pool(1, 4), np.full((4, 12), 99)), "outside"),
    ],
)
def test_bad_input_raises_naming_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_kernels_in_several_threads_restore_the_blas_thread_count():
    """Lines score in parallel threads: the BLAS limit the kernels share is undone only by the last one."""
    import threading

    from threadpoolctl import threadpool_info

    from edge_runtime.scoring import augment
    from edge_runtime.scoring.tiles import one_blas_thread, squared_min_distances

    def blas_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    assert before, "threadpoolctl finds no BLAS under numpy: the kernels could not limit it"
    z = np.random.default_rng(0).normal(size=(6, 40, 8)).astype(np.float32)
    left, right = augment(z[0], "left"), augment(z[1:], "right")
    with one_blas_thread():
        assert all(n == 1 for n in blas_threads())
        workers = [threading.Thread(target=squared_min_distances, args=(left, right)) for _ in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert all(n == 1 for n in blas_threads())  # the outer user still holds the limit
    assert blas_threads() == before


@pytest.mark.parametrize("l2, rows, workers", [(1024, 300, 1), (1024, 1024, 2), (784, 100, 2), (37, 8, 1)])
def test_tiled_minima_equal_the_whole_block(l2, rows, workers):
    """The fused kernel (padded tile rows, partial last tiles, selected references, threads) equals the
    minima of the whole distance block."""
    from edge_runtime.scoring import augment
    from edge_runtime.scoring.tiles import distance_tile, squared_min_distances

    rng = np.random.default_rng(l2 + rows)
    query, refs = rng.normal(size=(1000, 35)).astype(np.float32), rng.normal(size=(5, l2, 35)).astype(np.float32)
    left, right = augment(query, "left"), augment(refs, "right")
    select = np.array([3, 0, 4])
    block = np.einsum("pd,jqd->jpq", left.astype(np.float64), right[select].astype(np.float64))
    to_refs, from_refs = squared_min_distances(left, right, select, budget=4 * l2 * rows, workers=workers)
    np.testing.assert_allclose(to_refs, block.min(axis=2).T, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(from_refs, block.min(axis=1), rtol=1e-4, atol=1e-3)
    tile = distance_tile(rows, l2)
    assert tile.shape == (rows, l2) and tile.strides[0] % 4096 != 0  # rows never 4 KiB apart
