"""The pieces of ``eval/summary.json``: the selected configuration with its one test score,
the winner's curse of a test-sorted pick, the significance statement (exploratory), the
confidence-method table and the dataset counts."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from lus_core.confidence import failure_metrics as CM
from lus_core.evaluation.findings import findings_table
from lus_core.frames.skipped import skipped_summary
from lus_core.io_utils import read_json, write_json

from .matrix import CONFIG_COLUMNS, DELTA_METRICS, DEPLOYABLE, MAIN_METRICS, ROW_TYPES, TestSet
from .selection import TIE_BREAK, VAL_COLUMNS

log = logging.getLogger(__name__)

__all__ = ["write_summary", "read_summary", "selected_of", "NoSelection", "row_summary", "fmt_p", "significance_statement", "confidence_table", "dataset_counts",
           "selected_entry", "winners_curse", "clean_json", "CONFIDENCE_COLUMNS"]

# the confidence table's columns, primary first (AUGRC, Traub et al. 2024)
CONFIDENCE_COLUMNS = ("augrc", "auroc", "aurc", "eaurc")


class NoSelection(ValueError):
    """A summary without a `selected` configuration (a run older than selection on training patients)."""


def write_summary(summary: dict, path) -> None:
    """``eval/summary.json`` (strict JSON: NaN as null), atomically."""
    write_json(path, clean_json(summary))


def read_summary(path) -> dict:
    return read_json(path)


def selected_of(summary: Mapping, path) -> dict:
    """The configuration chosen on the training patients; an error naming ``path`` when the run has none."""
    selected = summary.get("selected")
    if not selected:
        raise NoSelection(f"{path}: no `selected` configuration; the run predates selection on training "
                          "patients: rerun `evaluate` (snakemake --forcerun evaluate)")
    return selected


def _plain(v):
    if v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return None if math.isnan(v) else float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def row_summary(r: Mapping) -> dict:
    keys = ["rank", "config_id", *CONFIG_COLUMNS]
    for name in MAIN_METRICS:
        keys += [name, f"{name}_lo", f"{name}_hi"]
    for name in DELTA_METRICS:
        keys += [f"delta_{name}", f"delta_{name}_lo", f"delta_{name}_hi", f"delta_{name}_p",
                 f"delta_{name}_significant"]
    keys += ["fallback_rate", "frames_fixed", "frames_broken", "cnn_acc_rejected", "fallback_acc_rejected",
             "confusion_matrix", *[c for c in VAL_COLUMNS if c in r]]
    out = {}
    for k in keys:
        v = _plain(r.get(k))
        if k == "confusion_matrix" and isinstance(v, str):
            v = json.loads(v)
        out[k] = v
    return out


def fmt_p(p, n_boot: int, factor: float = 1.0) -> str:
    """``p = 0.034``, or ``p < 0.001`` when no resample crossed 0 (the bootstrap's resolution)."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "p = n/a"
    if p <= 0:
        return f"p < {min(1.0, factor / max(n_boot, 1)):.2g}"
    return f"p = {min(1.0, p * factor):.3f}"


def _fmt_ci(est, lo, hi) -> str:
    return f"{100 * est:+.1f} pp [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def significance_statement(best: Mapping | None, n_configs: int, n_boot: int, ci: float) -> str:
    """About the test-sorted best combined configuration: exploratory, with its winner's curse."""
    if best is None:
        return "No combined configuration was evaluated."
    sig = bool(best["delta_accuracy_significant"])
    verdict = (
        "The interval excludes 0." if sig else
        "The interval includes 0: this test set cannot tell it from the CNN alone."
    )
    return (
        f"Exploratory: the combined configuration with the highest test accuracy is {best['config_id']}, "
        f"accuracy {100 * best['accuracy']:.1f}% [{100 * best['accuracy_lo']:.1f}, {100 * best['accuracy_hi']:.1f}]; "
        f"against the CNN alone of the same backbone (paired patient bootstrap, {n_boot} resamples, "
        f"{int(round(100 * ci))}% CI): accuracy "
        f"{_fmt_ci(best['delta_accuracy'], best['delta_accuracy_lo'], best['delta_accuracy_hi'])}, "
        f"{fmt_p(best['delta_accuracy_p'], n_boot)}. {verdict} "
        f"It was picked as the best of {n_configs} configurations on the same test patients, so its gain is "
        f"optimistic (winner's curse); Bonferroni-adjusted over the {n_configs}: "
        f"{fmt_p(best['delta_accuracy_p'], n_boot, n_configs)}. It is not the deployed configuration."
    )


def selected_entry(row: Mapping, criterion: str, n_candidates: int, chosen_on: str) -> dict:
    """summary.json's ``selected``: how it was chosen, its validation scores, its test score once."""
    out = {k: _plain(row.get(k)) for k in ("config_id", *CONFIG_COLUMNS, "rank")}
    out.update({
        "criterion": criterion,
        "validation_score": _plain(row.get(f"val_{criterion}")),
        "validation": {c[4:]: (int(row[c]) if c.startswith("val_n_") else _plain(row.get(c))) for c in VAL_COLUMNS},
        "chosen_on": chosen_on,
        "tie_break": TIE_BREAK,
        "n_candidates": int(n_candidates),
        "test": {m: {"estimate": _plain(row.get(m)), "lo": _plain(row.get(f"{m}_lo")),
                     "hi": _plain(row.get(f"{m}_hi"))} for m in MAIN_METRICS},
        "delta_vs_cnn": {m: {"diff": _plain(row.get(f"delta_{m}")), "lo": _plain(row.get(f"delta_{m}_lo")),
                             "hi": _plain(row.get(f"delta_{m}_hi")), "p": _plain(row.get(f"delta_{m}_p")),
                             "significant": _plain(row.get(f"delta_{m}_significant"))}
                         for m in DELTA_METRICS},
        "fallback_rate": _plain(row.get("fallback_rate")),
    })
    out["confusion_matrix"] = json.loads(row["confusion_matrix"]) if isinstance(row.get("confusion_matrix"), str) \
        else row.get("confusion_matrix")
    return out


def winners_curse(matrix: pd.DataFrame, selected_id: str, criterion: str) -> dict:
    """How far the deployable configuration with the best *test* score is above the selected
    one's test score (in the criterion): what picking on the test patients would have claimed."""
    dep = matrix[matrix["row_type"].isin(DEPLOYABLE)].assign(_other=lambda d: d["config_id"] != selected_id)
    # among equal test scores the selected configuration itself counts as the test-sorted best
    best = dep.sort_values([criterion, "_other", "config_id"], ascending=[False, True, True], kind="stable").iloc[0]
    sel = dep[dep["config_id"] == selected_id].iloc[0]
    return {
        "metric": criterion,
        "test_best_config_id": best["config_id"],
        "test_best_score": _plain(best[criterion]),
        "test_best_validation_score": _plain(best.get(f"val_{criterion}")),
        "selected_config_id": selected_id,
        "selected_test_score": _plain(sel[criterion]),
        "gap": _plain(float(best[criterion]) - float(sel[criterion])),
    }


def confidence_table(ts: TestSet, cnn_pred: Mapping[str, np.ndarray], conf_full, conf_json: Mapping) -> list[dict]:
    """One row per (backbone, method) on the test frames, every failure metric computed once
    here (lus_core.confidence.failure_metrics); ``reported`` keeps only what the confidence step
    measured that this table does not (e.g. conformal set coverage)."""
    out = []
    for (b, m), (confidence, trusted, set_size) in conf_full.items():
        correct = cnn_pred[b] == ts.y
        info = conf_json.get((b, m), {}) or {}
        row = {"backbone": b, "method": m, "threshold": _scalar(info.get("threshold"))}
        for name in CONFIDENCE_COLUMNS:
            row[name] = {"augrc": CM.augrc, "auroc": CM.failure_auroc, "aurc": CM.aurc,
                         "eaurc": CM.eaurc}[name](confidence, correct) if len(correct) else float("nan")
        row.update({
            "coverage": float(trusted.mean()) if len(trusted) else float("nan"),
            "acc_trusted": float(correct[trusted].mean()) if trusted.any() else float("nan"),
            "acc_rejected": float(correct[~trusted].mean()) if (~trusted).any() else float("nan"),
            "mean_set_size": float(np.nanmean(set_size)) if set_size is not None else None,
        })
        reported = info.get("test_metrics", {}) or {}
        shown = set(row) | {"augrc", "auroc", "aurc", "eaurc", "coverage", "n", "cnn_accuracy"}
        row["reported"] = {k: _scalar(v) for k, v in reported.items()
                           if _scalar(v) is not None and k not in shown and not k.startswith(("selective_risk",
                                                                                             "trust", "risk_"))}
        out.append(row)
    return out


def _scalar(v):
    if isinstance(v, bool | np.bool_):
        return bool(v)
    if isinstance(v, int | float | np.integer | np.floating):
        return float(v)
    if isinstance(v, str):
        return v
    return None


def dataset_counts(frame_index_csv, split: Mapping, n_classes: int) -> dict:
    out: dict = {}
    try:
        fi = pd.read_csv(frame_index_csv)
    except (OSError, ValueError) as e:  # the report still works without it
        log.warning("frame index %s unreadable: %s", frame_index_csv, e)
        return out
    test = set(map(str, split.get("test_patients", [])))
    fi["patient"] = fi["patient"].astype(str)
    is_test = fi["patient"].isin(test)
    out["n_frames"] = int(len(fi))
    out["n_videos"] = int(fi["video"].nunique())
    out["n_patients"] = int(fi["patient"].nunique())
    for part, mask in (("all", np.ones(len(fi), bool)), ("train", ~is_test), ("test", is_test)):
        sub = fi[mask]
        out[f"{part}_frames_per_class"] = np.bincount(sub["label"].astype(int), minlength=n_classes).tolist()
        out[f"{part}_videos"] = int(sub["video"].nunique())
        out[f"{part}_patients"] = int(sub["patient"].nunique())
    return out


def clean_json(o):
    """NaN -> None (strict JSON), numpy -> python."""
    if isinstance(o, dict):
        return {str(k): clean_json(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [clean_json(v) for v in o]
    if o is pd.NA:
        return None
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, float | np.floating):
        return None if math.isnan(o) else float(o)
    if isinstance(o, np.ndarray):
        return clean_json(o.tolist())
    return o


def build_summary(matrix: pd.DataFrame, val: pd.DataFrame, data, settings, test_patients: list[str], split: Mapping,
                  frame_index_csv, config: Mapping, matrix_csv: str, chosen_on: str) -> dict:
    """``eval/summary.json`` without its figures and video level: the selected configuration with
    its one test score, the winner's curse, the exploratory significance, counts, the confidence
    table and what the step was given. ``data`` / ``settings``: lus_core.evaluation.step's
    EvaluationInputs / EvaluationSettings."""
    records = matrix.to_dict("records")
    sel_row = next(r for r in records if r["selected"])
    combined = [r for r in records if r["row_type"] == "combined"]
    best = combined[0] if combined else None
    n_boot, ci, criterion = settings.n_bootstrap, settings.ci, settings.criterion
    ts, ref_train = data.ts, data.ref_train
    n_candidates = int(val["val_out_of_fold"].sum())
    summary: dict = {
        "selected": selected_entry(sel_row, criterion, n_candidates, chosen_on),
        "winners_curse": winners_curse(matrix, sel_row["config_id"], criterion),
        "best": row_summary(best) if best else None,
        "cnn_alone": {r["backbone"]: row_summary(r) for r in records if r["row_type"] == "cnn"},
        "best_per_row_type": {t: row_summary(next(r for r in records if r["row_type"] == t))
                              for t in ROW_TYPES if any(r["row_type"] == t for r in records)},
        "significance": _significance(best, combined, n_boot, ci),
        "counts": {
            "n_test_frames": int(len(ts.y)),
            "n_test_patients": int(ts.n_patients),
            "n_test_videos": int(ts.n_videos),
            "n_validation_frames": int(len(ref_train.frame_id)),
            "n_validation_patients": int(len(set(ref_train.patient))),
            "test_class_counts": np.bincount(ts.y, minlength=settings.n_classes).tolist(),
            "rows": int(len(matrix)),
            "rows_per_type": {t: int((matrix["row_type"] == t).sum()) for t in ROW_TYPES},
            "backbones": list(data.test),
            "confidence_methods": sorted({m for (_, m) in data.conf_full}),
            "spaces": sorted({key[1] for key in data.neigh_full}),
            "fallback_diversity": settings.diversities,
            "k": settings.ks,
            "fallback_modes": settings.modes,
            "dataset": dataset_counts(frame_index_csv, split, settings.n_classes),
        },
        "test_patients": test_patients,
        "classes": settings.classes,
        "n_bootstrap": n_boot,
        "ci": ci,
        "seed": settings.seed,
        "confidence_methods": confidence_table(ts, data.cnn_test, data.conf_full, data.conf_json),
        "fallback_function": "lus_core.similarity.fallback.fallback_scores",
        "matrix_csv": matrix_csv,
        "matrix_order": "test accuracy, best first: exploratory (the deployed configuration is `selected`)",
        "validation_columns": list(VAL_COLUMNS),
        "figures": [],
        "galleries": [],
        "config": dict(config),
        # skipped_videos.csv sits beside frame_index.csv (both written by frame_index)
        "skipped_videos": skipped_summary(Path(frame_index_csv).parent),
    }
    if any(p.finding_names for p in data.preds_full.values()):
        summary["findings"] = findings_table(data.preds_full, n_boot, ci, settings.seed).to_dict("records")
    return summary


def _significance(best: Mapping | None, combined: list[Mapping], n_boot: int, ci: float) -> dict:
    """Exploratory: how many combined configurations beat the CNN alone on the test patients."""
    n = len(combined)
    out = {
        "n_configurations": n,
        "n_significantly_better": int(sum(bool(r["delta_accuracy_significant"]) and r["delta_accuracy"] > 0
                                          for r in combined)),
        "n_significantly_worse": int(sum(bool(r["delta_accuracy_significant"]) and r["delta_accuracy"] < 0
                                         for r in combined)),
        "best_gain_accuracy": None,
        "best_p_value_bonferroni": None,
        "statement": significance_statement(best, n, n_boot, ci),
    }
    if best:
        out["best_gain_accuracy"] = {k: row_summary(best)[k] for k in (
            "delta_accuracy", "delta_accuracy_lo", "delta_accuracy_hi", "delta_accuracy_p",
            "delta_accuracy_significant")}
        out["best_p_value_bonferroni"] = min(1.0, float(best["delta_accuracy_p"]) * n)
    return out
