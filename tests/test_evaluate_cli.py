"""`musc-edge eval` on a generated line with the embedded default encoders."""
import csv
import json

import pytest

from edge_runtime.cli import main as cli
from edge_runtime.evaluate.metrics import image_auroc
from edge_runtime.evaluate.run import METRIC_KEYS
from edge_runtime.sim.generator import write_line


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("lines")
    write_line(root, "bagel", n_parts=40, defect_rate=0.4, seed=11)
    out = tmp_path_factory.mktemp("eval")
    rc = cli(["eval", "--dataset", "mvtec3d", "--root", str(root), "--modality", "2d", "3d", "2d+3d",
              "--mode", "batch", "replay", "--window", "16", "--groups", "512", "--group-size", "64",
              "--overlays", "3", "--baseline", "--out", str(out)])
    assert rc == 0
    return out


def test_metrics_documents_follow_the_schema(evaluated):
    for run in ("2d_batch", "3d_batch", "2d+3d_batch", "2d+3d_replay_w16"):
        doc = json.loads((evaluated / run / "metrics.json").read_text())
        assert set(doc) == {"classes", "mean", "config", "timing"}
        for m in list(doc["classes"].values()) + [doc["mean"]]:
            for key in METRIC_KEYS:
                assert 0.0 <= m[key] <= 1.0
        assert (evaluated / run / "metrics.md").read_text().startswith("# ")
        assert len(list((evaluated / run / "overlays" / "bagel").glob("*.png"))) == 3
    assert "2d+3d_replay_w16" in (evaluated / "summary.md").read_text()


def test_fusion_finds_what_3d_alone_misses_and_keeps_what_2d_alone_finds(evaluated):
    by_kind = {run: json.loads((evaluated / run / "metrics.json").read_text())["mean"]["image_auroc_by_kind"]
               for run in ("2d_batch", "3d_batch", "2d+3d_batch")}
    # Appearance-only defects (stain, discolour): absent from the cloud.
    assert by_kind["2d+3d_batch"]["appearance"] > by_kind["3d_batch"]["appearance"] + 0.15
    # Geometry-only defects (dent, bump, missing): the 2D-alone profile's stride-4 stage sees this
    # line's by their shading (measured: 2D alone and fused both 76.4 %, 3D alone 58.3 %).
    assert by_kind["2d+3d_batch"]["geometry"] >= by_kind["2d_batch"]["geometry"] - 0.05
    assert by_kind["2d+3d_batch"]["geometry"] > by_kind["3d_batch"]["geometry"] + 0.1


def test_2d_alone_scores_as_a_2d_only_line(evaluated):
    """The 2D run has the 2D-only line's defaults (settings.default_stages, rescores), not the fused line's."""
    doc = json.loads((evaluated / "2d_batch" / "metrics.json").read_text())
    fused = json.loads((evaluated / "2d+3d_batch" / "metrics.json").read_text())
    assert doc["config"]["settings"]["modalities"] == ["2d"] and doc["config"]["model"] != fused["config"]["model"]


def test_single_modality_runs_score_as_the_baseline_does(tmp_path):
    """A line that scores 2D or 3D alone takes the baseline's rule (docs/ABLATION.md): the same
    scores on every part, so the single-modality means can never fall below it."""
    write_line(tmp_path / "lines", "cookie", n_parts=12, defect_rate=0.34, seed=3)
    out = tmp_path / "eval"
    assert cli(["eval", "--root", str(tmp_path / "lines"), "--modality", "2d", "3d", "--mode", "batch",
                "--overlays", "0", "--baseline", "--out", str(out)]) == 0
    for run in ("2d_batch", "3d_batch"):
        ours, base = _scores_csv(out / run / "scores.csv"), _scores_csv(out / f"baseline_{run}" / "scores.csv")
        assert len(ours) == 12 and sum(label for label, _, _ in ours.values()) >= 3
        assert ours.keys() == base.keys()
        assert all(ours[k][1] == pytest.approx(base[k][1], abs=1e-6) for k in ours), run


def test_baseline_is_scored_on_the_same_parts_and_reported_beside_each_run(evaluated):
    summary = (evaluated / "summary.md").read_text()
    for run in ("2d_batch", "3d_batch", "2d+3d_batch"):
        doc = json.loads((evaluated / f"baseline_{run}" / "metrics.json").read_text())
        assert doc["config"]["baseline"] is True and doc["config"]["settings"]["cae"] is False
        ours = json.loads((evaluated / run / "metrics.json").read_text())
        assert doc["classes"]["bagel"]["parts_scored"] == ours["classes"]["bagel"]["parts_scored"] == 40
        assert f"| {run} | {100 * ours['mean']['image_auroc']:.2f} / {100 * ours['mean']['aupro']:.2f} | " \
               f"{100 * doc['mean']['image_auroc']:.2f} / {100 * doc['mean']['aupro']:.2f} |" in summary
    assert not (evaluated / "baseline_2d+3d_replay_w16").exists()  # the baseline is a batch protocol


def _scores_csv(path):
    rows = [line.split(",") for line in path.read_text().splitlines()[1:]]
    return {r[1] + r[2]: (int(r[3]), float(r[4]), r[5] == "1") for r in rows}


def test_replay_is_set_beside_batch_on_the_parts_it_scored(evaluated):
    """The replay leaves out its warm-up parts; batch is re-measured on exactly the parts the replay scored."""
    replay = json.loads((evaluated / "2d+3d_replay_w16" / "metrics.json").read_text())
    replayed = _scores_csv(evaluated / "2d+3d_replay_w16" / "scores.csv")
    batch_scores = _scores_csv(evaluated / "2d+3d_batch" / "scores.csv")
    kept = [k for k, (_, _, scored) in replayed.items() if scored]
    assert 0 < len(kept) < 40 == len(batch_scores)
    labels = [batch_scores[k][0] for k in kept]
    expected = image_auroc(labels, [batch_scores[k][1] for k in kept])
    same = replay["classes"]["bagel"]["batch_same_parts"]
    assert same["parts_scored"] == len(kept) == replay["classes"]["bagel"]["parts_scored"]
    assert same["image_auroc"] == pytest.approx(expected, abs=1e-9)
    row = (f"| 2d+3d_replay_w16 | mean | {len(kept)} | {100 * replay['mean']['image_auroc']:.2f} / "
           f"{100 * replay['mean']['aupro']:.2f} | {100 * same['image_auroc']:.2f} / {100 * same['aupro']:.2f} |")
    assert row in (evaluated / "summary.md").read_text()
    assert row in (evaluated / "2d+3d_replay_w16" / "metrics.md").read_text()


def test_embedded_defaults_beat_the_baseline_when_fused(evaluated):
    ours = json.loads((evaluated / "2d+3d_batch" / "metrics.json").read_text())["mean"]
    base = json.loads((evaluated / "baseline_2d+3d_batch" / "metrics.json").read_text())["mean"]
    # Measured on this line: +4.2 image AUROC, +1.3 AUPRO (points).
    assert ours["image_auroc"] >= base["image_auroc"] + 0.03
    assert ours["aupro"] >= base["aupro"] + 0.005


def test_per_kind_table_sets_fusion_beside_each_modality(evaluated):
    summary = (evaluated / "summary.md").read_text()
    table = summary.split("## Image AUROC by defect kind")[1].split("##")[0]
    header = next(line for line in table.splitlines() if line.startswith("| kind"))
    assert all(run in header for run in ("2d_batch", "3d_batch", "2d+3d_batch", "baseline_2d+3d_batch"))
    assert {"| appearance", "| geometry", "| both"} <= {line.split(" |")[0] for line in table.splitlines()}


def test_bad_dataset_root_is_a_clear_error(tmp_path, capsys):
    assert cli(["eval", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 1
    assert "nowhere" in capsys.readouterr().err


def test_replay_runs_the_guard_on_a_burst_line_and_draws_it(tmp_path):
    root, out = tmp_path / "lines", tmp_path / "eval"
    assert cli(["synth", "--out", str(root), "--classes", "tile", "--parts", "36", "--defect-rate", "0",
                "--seed", "5", "--systematic", "contamination", "--burst-start", "14", "--burst-len", "12"]) == 0
    assert cli(["eval", "--root", str(root), "--modality", "2d+3d", "--mode", "replay", "--window", "12",
                "--groups", "256", "--group-size", "32", "--overlays", "0", "--out", str(out)]) == 0
    guard = json.loads((out / "metrics.json").read_text())["classes"]["tile"]["guard"]
    burst = guard["burst"]
    assert (burst["start"], burst["length"]) == (14, 12)
    assert burst["recall"] >= 0.9 and guard["false_ng"] <= 0.1 and burst["first_alert_delay"] <= 5
    # the window does not learn the burst: none of its parts joins, so its threshold stands still
    assert burst["threshold_during_max"] <= 1.15 * burst["threshold_before"]
    assert "burst recall" in (out / "metrics.md").read_text()
    rows = (out / "scores.csv").read_text().splitlines()
    assert rows[0].endswith(",verdict,threshold,reference,alerts") and len(rows) == 37
    during = {row["threshold"] for row in list(csv.DictReader(rows))[14:26]}
    assert len(during) == 1 and float(during.pop()) == pytest.approx(burst["threshold_during_max"], abs=1e-5)
    assert (out / "timeline" / "tile.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_surface_normals_as_the_3d_encoder(tmp_path):
    """--encoder3d normals: the cloud's normals through the 2D encoder, in batch and in a replay."""
    write_line(tmp_path / "lines", "tile", n_parts=16, defect_rate=0.25, seed=4)
    out = tmp_path / "eval"
    assert cli(["eval", "--root", str(tmp_path / "lines"), "--modality", "3d", "2d+3d", "--mode", "batch", "replay",
                "--window", "10", "--encoder3d", "normals", "--overlays", "0", "--out", str(out)]) == 0
    for run in ("3d_batch", "2d+3d_batch", "2d+3d_replay_w10"):
        doc = json.loads((out / run / "metrics.json").read_text())
        assert doc["config"]["settings"]["encoder_3d"] == "normals" and doc["config"]["model"].endswith("+normals")
        assert 0.0 <= doc["mean"]["image_auroc"] <= 1.0 and doc["classes"]["tile"]["parts_scored"] > 0
