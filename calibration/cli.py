"""`musc-edge calibrate`: sensor calibration, decision thresholds, and synthetic data for both.

Subcommands:
  sensors       camera intrinsics + scanner-to-camera extrinsics -> calib.toml
  align         scanner clouds -> organized clouds in the camera's pixel grid (with a calib.toml)
  synth-rig     a synthetic camera + scanner rig with ground truth (images, clouds, truth.json)
  threshold     a line's decision threshold from scores (CSV or the station's SQLite verdict log)
  synth-scores  generated lines of labelled scores (scores.csv), to compare threshold policies

Every subcommand computes first and writes last: on an error nothing is written.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sqlite3
import sys
from pathlib import Path

import numpy as np

from edge_runtime.inspection import policies as th
from calibration.files import toml_table, write_text_atomic

# --------------------------------------------------------------------------- sensors


def _board(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or min(int(match[1]), int(match[2])) < 2:
        raise argparse.ArgumentTypeError(f"board must be COLSxROWS inner corners, each >= 2 (e.g. 9x6), got {text!r}")
    return int(match[1]), int(match[2])


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def run_sensors(args: argparse.Namespace) -> int:
    from calibration.sensors import calibrate_sensors, read_views

    image_names, cloud_names, images, clouds = read_views(args.images, args.clouds)
    calib = calibrate_sensors(images, clouds, args.board, args.square, image_names, cloud_names)
    report = dict(calib.residuals)
    if args.truth:
        from calibration.rig import calibration_errors

        report.update(calibration_errors(calib, json.loads(Path(args.truth).read_text())))
    overlay = _overlay(images[0], clouds[0], calib) if args.overlay else None
    calib.save(args.out)
    if overlay is not None:
        _write_png(args.overlay, overlay)
    print(f"calibrated {len(images)} views -> {args.out}")
    print(f"  reprojection RMS {report['reprojection_rms_px']:.3f} px, scanner plane RMS "
          f"{report['plane_rms_mm']:.3f} mm, predicted 1-sigma {report['rotation_sigma_deg']:.3f} deg / "
          f"{report['translation_sigma_mm']:.2f} mm")
    if args.truth:
        print(f"  against the truth: rotation {report['rotation_error_deg']:.4f} deg, translation "
              f"{report['translation_error_mm']:.3f} mm, alignment RMS {report['alignment_rms_px']:.3f} px")
    print(json.dumps(report, indent=2))
    return 0


def _overlay(image: np.ndarray, cloud: np.ndarray, calib) -> np.ndarray:
    """The camera image with the scanner's points drawn over it, coloured by depth (BGR uint8)."""
    import cv2

    from calibration.sensors import project_to_camera

    organized = project_to_camera(cloud, calib)
    hit = organized[..., 2] > 0
    z = organized[..., 2]
    lo, hi = np.percentile(z[hit], [2, 98])
    colours = cv2.applyColorMap(np.clip((z - lo) / max(hi - lo, 1e-9) * 255, 0, 255).astype(np.uint8),
                                cv2.COLORMAP_TURBO)
    out = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    out[hit] = (0.35 * out[hit] + 0.65 * colours[hit]).astype(np.uint8)
    return out


def _write_png(path: str | Path, image: np.ndarray) -> None:
    import cv2

    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    from calibration.files import write_bytes_atomic

    write_bytes_atomic(path, data.tobytes())


def run_align(args: argparse.Namespace) -> int:
    import tifffile
    from tqdm import tqdm

    from calibration.sensors import SensorCalibration, project_to_camera

    calib = SensorCalibration.load(args.calib)
    files = sorted(p for p in Path(args.clouds).glob("*.tif*"))
    if not files:
        raise FileNotFoundError(f"no .tiff clouds in {args.clouds}")
    aligned = {}
    for path in tqdm(files, desc="aligning clouds"):
        try:
            aligned[path.name] = project_to_camera(tifffile.imread(path), calib, args.width, args.height)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, cloud in aligned.items():
        tifffile.imwrite(out / name, cloud, photometric="rgb")
    print(f"aligned {len(aligned)} clouds into the {calib.width}x{calib.height} camera grid -> {out}")
    return 0


def run_synth_rig(args: argparse.Namespace) -> int:
    from calibration.rig import make_rig, write_rig

    rig = make_rig(args.seed, n_poses=args.poses, board=args.board, square=args.square,
                   width=args.width, height=args.height, image_noise=args.image_noise,
                   depth_noise=args.depth_noise / 1000, floor=not args.no_floor)
    truth = write_rig(rig, args.out, progress=True)
    print(f"rig seed {args.seed}: {args.poses} poses -> {args.out}/images, {args.out}/clouds, {truth}")
    return 0


# --------------------------------------------------------------------------- thresholds

_GOOD = {"0", "ok", "good", "false", "no"}
_DEFECTIVE = {"1", "ng", "defect", "defective", "bad", "anomalous", "true", "yes"}
_UNLABELLED = {"", "nan", "none", "-", "?"}


def _label(text: str, where: str) -> float:
    value = text.strip().lower()
    if value in _GOOD:
        return 0.0
    if value in _DEFECTIVE:
        return 1.0
    if value in _UNLABELLED:
        return math.nan
    raise ValueError(f"{where}: label {text!r} is neither good (0, ok, good) nor defective (1, ng, defective)")


def _line_column(header: list[str]) -> str | None:
    return "line" if "line" in header else "class" if "class" in header else None


def read_scores_csv(path: str | Path, line: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(parts, scores (N,), labels (N,) with NaN = unlabelled) of ``line`` from a CSV, in file order.

    Needs columns ``part`` and ``score``; ``line`` (or ``class``, as in the
    evaluation's scores.csv) selects the line when present; ``label`` is optional.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"scores file not found: {path}")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in ("part", "score") if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (header: {', '.join(header)})")
        column = _line_column(header)
        parts, scores, labels, lines = [], [], [], set()
        for row_number, row in enumerate(reader, start=2):
            if column:
                lines.add(row[column])
                if row[column] != line:
                    continue
            try:
                score = float(row["score"])
            except ValueError:
                raise ValueError(f"{path}:{row_number}: score {row['score']!r} is not a number") from None
            if not math.isfinite(score):
                raise ValueError(f"{path}:{row_number}: score {row['score']!r} is not finite")
            parts.append(row["part"])
            scores.append(score)
            labels.append(_label(row.get("label") or "", f"{path}:{row_number}"))
    if not parts:
        known = f" (lines present: {', '.join(sorted(lines))})" if lines else ""
        raise ValueError(f"{path}: no scores for line {line!r}{known}")
    return parts, np.array(scores), np.array(labels)


def read_labels_csv(path: str | Path, line: str) -> dict[str, float]:
    """part -> label (0 good, 1 defective) of ``line`` from a CSV with ``part,label`` (+ optional line/class)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file not found: {path}")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if "part" not in header or "label" not in header:
            raise ValueError(f"{path}: needs columns part and label (header: {', '.join(header)})")
        column = _line_column(header)
        return {row["part"]: _label(row["label"], f"{path}:{n}") for n, row in enumerate(reader, start=2)
                if column is None or row[column] == line}


def read_verdict_log(db: str | Path, line: str) -> tuple[list[str], np.ndarray]:
    """(parts, scores (N,)) of ``line``'s scored verdicts (ok/ng) in a station SQLite log, oldest first."""
    db = Path(db)
    if not db.is_file():
        raise FileNotFoundError(f"verdict log not found: {db}")
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute("SELECT part, score FROM verdicts WHERE line = ? AND verdict IN ('ok', 'ng') "
                           "AND score IS NOT NULL ORDER BY seq, ts", (line,)).fetchall()
        if not rows:
            lines = [r[0] for r in con.execute("SELECT DISTINCT line FROM verdicts")]
            raise ValueError(f"{db}: no scored verdicts for line {line!r} (lines present: {', '.join(lines) or 'none'})")
    return [r[0] for r in rows], np.array([float(r[1]) for r in rows])


def _policy_from_args(args: argparse.Namespace) -> th.ThresholdPolicy:
    given = ("k", "margin", "false_reject_rate", "target_recall", "window", "value")
    return th.ThresholdPolicy(args.policy, {k: getattr(args, k) for k in given if getattr(args, k) is not None})


def _compare(args: argparse.Namespace, chosen: th.ThresholdPolicy, scores: np.ndarray, labels: np.ndarray,
             ) -> tuple[list[dict], dict]:
    """The policy comparison's rows, fitting on the first ``--fit-fraction`` of the parts; and the split."""
    n_fit = int(round(args.fit_fraction * len(scores)))
    test = ~np.isnan(labels[n_fit:])
    if n_fit < th.MIN_SCORES or test.sum() < th.MIN_SCORES:
        raise ValueError(f"--compare splits {len(scores)} parts into {n_fit} to fit and the rest to test: "
                         f"need {th.MIN_SCORES} or more in each (and labels on the test parts)")
    policies = dict(th.DEFAULT_COMPARISON)
    if chosen not in policies.values():
        params = " ".join(f"{k}={v:g}" for k, v in chosen.params.items() if k != "window")
        policies[f"{chosen.policy} {params} (chosen)".replace("  ", " ")] = chosen
    fit_labels = labels[:n_fit].copy()
    if args.labelled is not None:  # the operator labelled only the first few parts
        fit_labels[np.flatnonzero(~np.isnan(fit_labels))[args.labelled:]] = np.nan
    test_scores, test_labels = scores[n_fit:][test], labels[n_fit:][test].astype(int)
    rows = th.compare_policies(policies, scores[:n_fit], fit_labels, test_scores, test_labels)
    split = {"fit_parts": n_fit, "fit_labelled": int((~np.isnan(fit_labels)).sum()),
             "test_parts": int(test.sum()), "test_defective": int(test_labels.sum())}
    return rows, split


def _comparison_plot(path: Path, scores: np.ndarray, labels: np.ndarray, rows: list[dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    bins = np.histogram_bin_edges(scores, bins=60)
    ax.hist(scores[labels == 0], bins=bins, alpha=0.6, label="good", color="tab:green")
    ax.hist(scores[labels == 1], bins=bins, alpha=0.6, label="defective", color="tab:red")
    for i, row in enumerate(r for r in rows if r.get("threshold") is not None):
        ax.axvline(row["threshold"], color=f"C{i}", linestyle="--" if row["source"] == "hindsight" else "-",
                   label=f"{row['policy']} ({row['threshold']:.3g})")
    ax.set_xlabel("score (test parts)")
    ax.set_ylabel("parts")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_threshold(args: argparse.Namespace) -> int:
    policy = _policy_from_args(args)
    if args.db and args.scores:
        raise ValueError("give either --scores or --db, not both")
    source = args.db or args.scores
    if args.db:
        parts, scores = read_verdict_log(args.db, args.line)
        labels = np.full(len(scores), np.nan)
    elif args.scores:
        parts, scores, labels = read_scores_csv(args.scores, args.line)
    elif policy.policy == "fixed":
        parts, scores, labels = [], np.zeros(0), np.zeros(0)
    else:
        raise ValueError(f"policy {policy.policy!r} needs scores: give --scores FILE or --db station.sqlite")
    if args.labels:
        given = read_labels_csv(args.labels, args.line)
        labels = np.array([given.get(p, lab) for p, lab in zip(parts, labels)])
    if args.last:
        parts, scores, labels = parts[-args.last:], scores[-args.last:], labels[-args.last:]

    labelled = ~np.isnan(labels)
    if policy.policy.startswith("labelled"):
        if not labelled.any():
            raise ValueError(f"policy {policy.policy!r} needs labels: a label column in --scores, or --labels FILE")
        threshold = policy.fit(scores[labelled], labels[labelled].astype(int))
    else:
        threshold = policy.fit(scores if len(scores) else None)

    comparison = None
    if args.compare:
        if labelled.sum() < 2 * th.MIN_SCORES:
            raise ValueError("--compare needs labelled parts (a label column in --scores, or --labels FILE)")
        comparison = _compare(args, policy, scores, labels)

    # everything computed: now write
    print(f"line {args.line!r}: threshold {threshold.value:.6g} (source {threshold.source}; "
          + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in threshold.params.items())
          + (f"; from {source}" if source else "") + ")")
    if args.out:
        info = {"fitted_on": int(threshold.params["n"])} if "n" in threshold.params else {}
        table = policy.to_table(threshold.value, **info, line=args.line)
        header = f"# decision threshold for line {json.dumps(args.line)} (musc-edge calibrate threshold)\n"
        write_text_atomic(args.out, header + toml_table("threshold", table))
        print(f"wrote {args.out}")
    if comparison:
        _report_comparison(args, comparison, scores, labels)
    return 0


def _report_comparison(args: argparse.Namespace, comparison: tuple[list[dict], dict], scores: np.ndarray,
                       labels: np.ndarray) -> None:
    from edge_runtime.bench.report import markdown_table, write_report

    rows, split = comparison
    columns = ["policy", "source", "threshold", "false_reject_rate", "miss_rate", "f1", "frr_plus_miss"]
    print(f"\npolicies fitted on the first {split['fit_parts']} parts ({split['fit_labelled']} labelled), "
          f"measured on the next {split['test_parts']} ({split['test_defective']} defective):\n")
    print(markdown_table(rows, columns))
    report_dir = Path(args.report_dir) if args.report_dir else (Path(args.out).parent if args.out else Path("."))
    name = "threshold_compare_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", args.line)
    extra = {"line": args.line, "split": split,
             "hindsight": "rows 'hindsight ...': the best threshold on the test parts themselves, by "
                          "min(false-reject rate + miss rate) and by max F1"}
    paths = write_report(report_dir, name, rows, columns, extra=extra)
    keep = (np.arange(len(scores)) >= split["fit_parts"]) & ~np.isnan(labels)
    _comparison_plot(report_dir / f"{name}.png", scores[keep], labels[keep], rows, f"line {args.line}")
    print(f"wrote {paths['table']}, {paths['json']}, {report_dir / f'{name}.png'}")


def run_synth_scores(args: argparse.Namespace) -> int:
    from calibration.synthetic_scores import LINES, generated_line, write_scores_csv

    lines = {name: generated_line(args.seed + i, args.parts, rate, sep)
             for i, (name, (rate, sep)) in enumerate(LINES.items())}
    write_scores_csv(args.out, lines)
    print(f"wrote {len(lines)} generated lines x {args.parts} parts -> {args.out}: "
          + ", ".join(f"{n} (defect rate {r:g}, separation {s:g})" for n, (r, s) in LINES.items()))
    return 0


# --------------------------------------------------------------------------- entry point


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="musc-edge calibrate", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sensors", help="camera intrinsics + scanner-to-camera extrinsics -> calib.toml")
    p.add_argument("--images", required=True, help="folder of NNN.png camera views of the board")
    p.add_argument("--clouds", required=True, help="folder of NNN.tiff organized scanner clouds (metres), same NNN")
    p.add_argument("--board", type=_board, default=(9, 6), help="inner corners COLSxROWS (default 9x6)")
    p.add_argument("--square", type=_positive_float, default=0.02, help="square size in metres (default 0.02)")
    p.add_argument("--out", required=True, help="calib.toml to write")
    p.add_argument("--truth", help="a synthetic rig's truth.json: also report the errors against it")
    p.add_argument("--overlay", help="also write a PNG of the first view with the scanner points drawn over it")
    p.set_defaults(run=run_sensors)

    p = sub.add_parser("align", help="organized scanner clouds -> the camera's pixel grid (camera frame)")
    p.add_argument("--calib", required=True, help="calib.toml from `calibrate sensors`")
    p.add_argument("--clouds", required=True, help="folder of .tiff scanner clouds")
    p.add_argument("--out", required=True, help="folder for the aligned .tiff clouds")
    p.add_argument("--width", type=_positive_int, help="output width (default: the calibrated image width)")
    p.add_argument("--height", type=_positive_int, help="output height (default: the calibrated image height)")
    p.set_defaults(run=run_align)

    p = sub.add_parser("synth-rig", help="synthetic camera + scanner rig with ground truth")
    p.add_argument("--out", required=True)
    p.add_argument("--poses", type=_positive_int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--board", type=_board, default=(9, 6))
    p.add_argument("--square", type=_positive_float, default=0.02)
    p.add_argument("--width", type=_positive_int, default=640)
    p.add_argument("--height", type=_positive_int, default=480)
    p.add_argument("--image-noise", type=float, default=2.0, help="gray levels (0..255), default 2")
    p.add_argument("--depth-noise", type=float, default=0.3, help="scanner depth sigma in mm, default 0.3")
    p.add_argument("--no-floor", action="store_true", help="the scanner sees only the board")
    p.set_defaults(run=run_synth_rig)

    p = sub.add_parser("threshold", help="a line's decision threshold from scores")
    p.add_argument("--line", required=True, help="product line (matches the line/class column or the log)")
    p.add_argument("--policy", required=True, choices=th.SOURCES)
    p.add_argument("--k", type=float, help=f"mad: threshold = median + k * 1.4826 * MAD (default {th.DEFAULTS['mad']['k']:g})")
    p.add_argument("--margin", type=float, help="mad, 2D+3D lines: the threshold at least (1 + margin) * median "
                   f"(window-scaled scores; default {th.DEFAULTS['mad']['margin']:g})")
    p.add_argument("--false-reject-rate", type=float, help=f"quantile: target false-reject rate (default {th.DEFAULTS['quantile']['false_reject_rate']:g})")
    p.add_argument("--target-recall", type=float, help=f"labelled-recall: recall to reach (default {th.DEFAULTS['labelled-recall']['target_recall']:g})")
    p.add_argument("--value", type=float, help="fixed: the threshold")
    p.add_argument("--window", type=int, help="mad/quantile: the station fits on its last N scores (0: all)")
    p.add_argument("--scores", help="CSV with part,score (+ line or class, label)")
    p.add_argument("--labels", help="CSV with part,label (+ line or class): operator labels")
    p.add_argument("--db", help="station SQLite log with a verdicts table, instead of --scores")
    p.add_argument("--last", type=_positive_int, help="use only the last N parts")
    p.add_argument("--out", help="TOML file to write the [threshold] table to")
    p.add_argument("--compare", action="store_true",
                   help="fit the policies on the first parts, measure false rejects and misses on the rest")
    p.add_argument("--fit-fraction", type=float, default=0.5, help="--compare: share of parts to fit on")
    p.add_argument("--labelled", type=_positive_int, help="--compare: labelled policies see only the first N labelled parts")
    p.add_argument("--report-dir", help="--compare: folder for the table (md, json) and plot (default: beside --out)")
    p.set_defaults(run=run_threshold)

    p = sub.add_parser("synth-scores", help="generated lines of labelled scores (scores.csv)")
    p.add_argument("--out", required=True)
    p.add_argument("--parts", type=_positive_int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run_synth_scores)
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError, sqlite3.Error) as exc:
        print(f"musc-edge calibrate {args.command}: error: {exc}", file=sys.stderr)
        return 1
