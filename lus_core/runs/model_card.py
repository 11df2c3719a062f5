"""The model card of a run (Mitchell et al. 2019; the items TRIPOD-AI asks a prediction model's
report to state): intended use, the data, the recipe, the selection rule, the patient-level
estimate with its interval, findings AUROC, failure detection, known limits, code and config.

Every number is read from the run's files (eval/summary.json, split.json, frame_index.csv, the
frame stores' attributes, the selected backbone's model file, the config): `report` writes
``report/model_card.md`` beside the report (`write_model_card`), and `lus export` copies it
(`model_card_text` makes it from a finished run when the report has none).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

import lus_core
from lus_core.frames.store import read_frame_index
from lus_core.io_utils import atomic_path, config_json, read_json, sha256_file
from lus_core.runs.nested_markdown import estimate_lines, folds_lines
from lus_core.split.scopes import DEPLOYED, scope_split

METRICS = (("qwk", "QWK"), ("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("balanced_accuracy", "balanced accuracy"))


def _f(x, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def _ci(d: Mapping, digits: int = 3) -> str:
    return f"{_f(d.get('estimate'), digits)} [{_f(d.get('lo'), digits)}, {_f(d.get('hi'), digits)}]"


def _span(values: pd.Series) -> str:
    lo, hi = int(values.min()), int(values.max())
    return str(lo) if lo == hi else f"{lo}-{hi}"


NOT_POOLED = ("Not pooled over the outer folds: each outer fold measured its {what} on its own test patients "
              "(`outer/<o>/eval/summary.json`), and the deployed model, trained on every patient, has no test "
              "patients left to measure them on.")


def _split_line(split: Mapping, deployed: Mapping, test_rows: pd.Series, counts: Mapping, nested: Mapping | None) -> str:
    n_folds = len(deployed.get("folds", []))
    if nested:
        sizes = ", ".join(str(len(f["test_patients"])) for f in nested["folds"])
        return (f"- Nested cross-validation by patient: {nested['n_outer_folds']} outer folds of {sizes} test patients "
                f"(exact balanced searches, one after another), each patient tested once by models and choices made "
                f"without them; the deployed model trained on all {len(deployed['train_patients'])} patients "
                f"({n_folds} cross-validation folds for its choice).")
    return (f"- Split by patient: {len(deployed['train_patients'])} training patients ({int((~test_rows).sum())} frames, "
            f"{n_folds} cross-validation folds) and {len(deployed['test_patients'])} test patients "
            f"({int(test_rows.sum())} frames), chosen by an exact search ({split.get('method', '—')}) that balances "
            f"their frames per class (test frames per class {counts.get('test_frames_per_class')}).")


def _nested_estimate_lines(nested: Mapping) -> list[str]:
    return ["## Patient-level estimate (nested cross-validation over every patient)", "",
            *estimate_lines(nested), *folds_lines(nested)]


def store_facts(paths) -> pd.DataFrame:
    """Per stored video: its kind of source, device, crop source and burned-in flag (store attributes)."""
    rows = []
    for path in sorted(set(map(str, paths))):
        with h5py.File(path, "r") as f:
            a = f.attrs
            kind = {"dicom": "DICOM", "frames": "frame folder", "video": "video file"}.get(
                str(a.get("source_kind", "")), "video or frame folder")
            rows.append({"video": str(a.get("video_id", Path(path).stem)), "kind": kind,
                         "device": str(a.get("device", "")) or "not recorded",
                         "crop_source": str(a.get("crop_source", "auto")),
                         "burned_in": str(a.get("burned_in_annotation", ""))})
    return pd.DataFrame(rows, columns=["video", "kind", "device", "crop_source", "burned_in"])


def render(summary: Mapping, split: Mapping, index: pd.DataFrame, stores: pd.DataFrame, config: Mapping,
           model_sha256: str | None, title: str, nested: Mapping | None = None) -> str:
    """The card's Markdown from the run's contents (see module doc); ``nested`` is the run's
    nested/estimate.json when split.outer_folds > 1 (the estimate then comes from every patient)."""
    sel = summary["selected"]
    classes = list(summary.get("classes") or config["classes"])
    counts = summary["counts"]["dataset"]
    ci = summary.get("ci", config["evaluate"]["ci"])
    deployed_split = scope_split(split, DEPLOYED)
    test_p = list(deployed_split["test_patients"])
    lines = [f"# Model card: {title}", "",
             f"Generated from the run's files by lus_core {lus_core.__version__} (`lus_core.runs.model_card`): "
             "`eval/summary.json`, `split.json`, `frame_index.csv`, the frame stores, the selected model file and "
             "the config. Every number below is read from them.", ""]

    lines += ["## Intended use", "",
              f"- Research on lung-ultrasound (LUS) scoring: a score in {classes} (lowest severity first) for each "
              "frame of a lung-ultrasound video like the training videos, a flag on frames whose score should not be "
              "trusted, and the most similar training frames for those (`lus predict`).",
              "- Users: clinical-AI researchers who can check the scores against the videos; the scores support a "
              "reader, who decides.", "",
              "## Not intended use", "",
              "- Diagnosis, triage or treatment decisions: the model has not been validated prospectively or on "
              "another site (see the limits).",
              "- Videos unlike the training data: other devices, probes, presets or patient groups than listed under "
              "Data, non-lung views, and paediatric patients unless the data held them.",
              "- Identifying patients: the run stores pseudonymised patient ids only where its input was DICOM.", ""]

    kinds = Counter(stores["kind"]) if len(stores) else Counter()
    devices = Counter(stores["device"]) if len(stores) else Counter()
    per_class = index.groupby("label").size().reindex(range(len(classes)), fill_value=0)
    videos_per_patient = index.groupby("patient")["video"].nunique()
    test_rows = index["patient"].astype(str).isin(test_p)
    lines += ["## Data", "",
              *(["- The embedded synthetic cohort (rendered by the workflow, `dataset.synthetic`): no patient's "
                 "data; its numbers show the workflow, not a clinical model."] if config["dataset"]["synthetic"]["enabled"]
                else []),
              f"- {index['patient'].nunique()} patients, {index['video'].nunique()} videos, {len(index)} frames "
              f"({_span(videos_per_patient)} videos per patient).",
              "- Frames per class: " + ", ".join(f"{c}: {int(n)}" for c, n in zip(classes, per_class, strict=True)) + ".",
              _split_line(split, deployed_split, test_rows, counts, nested),
              "- Sources: " + (", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "—") + "; devices: "
              + (", ".join(f"{d} ({n} videos)" for d, n in sorted(devices.items())) or "—") + "."]
    skipped = (summary.get("skipped_videos") or {}).get("count", 0)
    lines += [f"- Videos left out (unreadable or unlabelled, `skipped_videos.csv`): {skipped}."]
    burned = int((stores["burned_in"] == "YES").sum()) if len(stores) else 0
    if kinds.get("DICOM"):
        regions = int((stores["crop_source"] == "dicom_regions").sum())
        lines += [f"- DICOM: {regions} of {kinds['DICOM']} cropped to the sector of their ultrasound regions; "
                  f"{burned} declare burned-in annotation (text in the pixels)."]
    lines += [""]

    t = config["train"]
    lines += ["## Recipe", "",
              f"- Backbones trained: {', '.join(t['backbones'])} (weights {json.dumps(t['weights'])}, finetune "
              f"{json.dumps(t['finetune'])}, loss {t['loss']}, at most {t['epochs']} epochs, input "
              f"{t['image_size']} px from {config['frames']['size']} px stored frames, augmentation after Roy et al. 2020).",
              f"- Confidence methods: {', '.join(config['confidence']['methods'])} (fitted on out-of-fold predictions "
              f"of the training patients, threshold rule {config['confidence']['threshold_rule']}).",
              f"- Similarity fallback: spaces {', '.join(config['similarity']['spaces'])}, k {config['similarity']['k']}, "
              f"{', '.join(config['similarity']['fallback'])}.", ""]

    lines += ["## Selection rule", "",
              f"The deployed configuration is **{sel['config_id']}**: the best validation {sel['criterion']} "
              f"({_f(sel.get('validation_score'))}) of {sel.get('n_candidates', '?')} deployable configurations, "
              f"chosen on {sel.get('chosen_on', 'the training patients')}. Ties: {sel.get('tie_break', '—')}.", ""]

    if nested:
        lines += _nested_estimate_lines(nested)
    else:
        lines += ["## Patient-level estimate (test patients)", "",
                  f"The selected configuration scored once on the {len(test_p)} test patients ({int(test_rows.sum())} "
                  f"frames); {ci:.0%} bootstrap intervals over test patients ({summary.get('n_bootstrap', '?')} resamples).",
                  "", "| metric | validation (training patients, out of fold) | test [interval] | Δ vs the CNN alone [interval] |",
                  "|---|---|---|---|"]
        for key, name in METRICS:
            delta = (sel.get("delta_vs_cnn") or {}).get(key) or {}
            d = f"{delta['diff']:+.3f} [{delta['lo']:+.3f}, {delta['hi']:+.3f}]" if delta.get("diff") is not None else "—"
            lines.append(f"| {name} | {_f((sel.get('validation') or {}).get(key))} | {_ci(sel['test'][key])} | {d} |")
        video = (summary.get("video_level") or {}).get(sel["backbone"], [])
        if video:
            lines += ["", f"Video level ({sel['backbone']}, {video[0].get('n_test_videos', '?')} test videos, the CNN's "
                      "frame scores aggregated):", "", "| video score | validation QWK | test accuracy [interval] | test QWK [interval] |",
                      "|---|---|---|---|"]
            for r in video:
                lines.append(f"| {r['video_score']} | {_f(r.get('val_qwk'))} | {_f(r.get('accuracy'))} "
                             f"[{_f(r.get('accuracy_lo'))}, {_f(r.get('accuracy_hi'))}] | {_f(r.get('qwk'))} "
                             f"[{_f(r.get('qwk_lo'))}, {_f(r.get('qwk_hi'))}] |")
        lines += [""]

    findings = [r for r in summary.get("findings") or [] if r["backbone"] == sel["backbone"]]
    lines += ["## Findings AUROC", ""]
    if nested:
        lines += [NOT_POOLED.format(what="findings' AUROC")]
    elif findings:
        lines += ["| finding | level | test AUROC [interval] | test positives / n | validation AUROC |", "|---|---|---|---|---|"]
        for r in findings:
            lines.append(f"| {r['finding']} | {r['level']} | {_f(r.get('auroc'))} [{_f(r.get('auroc_lo'))}, "
                         f"{_f(r.get('auroc_hi'))}] | {r.get('n_test_positive')} / {r.get('n_test')} | {_f(r.get('val_auroc'))} |")
    else:
        lines += ["The run trained no auxiliary findings (`dataset.findings` empty)."]
    lines += [""]

    methods = [r for r in summary.get("confidence_methods") or [] if r["backbone"] == sel["backbone"]]
    if nested:
        lines += ["## Failure detection", "", NOT_POOLED.format(what="failure-detection figures")]
    else:
        lines += ["## Failure detection", "",
                  f"How well each confidence method of {sel['backbone']} separates the CNN's right and wrong test frames "
                  "(AUGRC: area under the generalised risk-coverage curve, lower is better; failure AUROC higher is better; "
                  "coverage: the fraction trusted at the method's threshold). The deployed one is marked.", "",
                  "| method | AUGRC | failure AUROC | AURC | E-AURC | coverage |", "|---|---|---|---|---|---|"]
        for r in sorted(methods, key=lambda r: (r.get("augrc") is None, r.get("augrc") or 0)):
            mark = " (deployed)" if r["method"] == sel.get("confidence") else ""
            lines.append(f"| {r['method']}{mark} | {_f(r.get('augrc'), 4)} | {_f(r.get('auroc'))} | {_f(r.get('aurc'))} "
                         f"| {_f(r.get('eaurc'))} | {_f(r.get('coverage'), 2)} |")
    lines += [""]

    lines += ["## Known limits (measured)", ""]
    if nested:
        level = "video" if "video" in nested else "frame"
        qwk = nested[level]["qwk"]
        lines.append(f"- Few patients: {nested['n_patients']}; the pooled {level} QWK interval spans {_f(qwk.get('lo'))} "
                     f"to {_f(qwk.get('hi'))} (width {_f((qwk.get('hi') or 0) - (qwk.get('lo') or 0))}).")
    else:
        qwk = sel["test"]["qwk"]
        lines.append(f"- Few test patients: {len(test_p)}; the test QWK interval spans {_f(qwk.get('lo'))} to "
                     f"{_f(qwk.get('hi'))} (width {_f((qwk.get('hi') or 0) - (qwk.get('lo') or 0))}).")
    one_label = index.groupby("video")["label"].nunique()
    lines.append(f"- Weak labels: {int((one_label == 1).sum())} of {len(one_label)} videos carry one score for all "
                 "their frames (a video-level or range label that every frame inherits, whether or not the frame shows "
                 "the finding).")
    wc = summary.get("winners_curse") or {}
    if wc.get("gap") is not None:
        lines.append(f"- Winner's curse: picking the best configuration on the test patients would have claimed "
                     f"{_f(wc.get('test_best_score'))} {wc.get('metric', '')} ({wc.get('test_best_config_id')}), "
                     f"{_f(wc['gap'])} above the selected configuration's test score.")
    smallest = int(per_class.min()) if len(per_class) else 0
    lines.append(f"- Class balance: the rarest class has {smallest} frames of {len(index)}"
                 + (f"; test frames per class {counts.get('test_frames_per_class')}." if not nested else "."))
    lines.append(f"- External shift: not measured. All data come from this run's dataset ({len(devices)} device "
                 f"label(s): {', '.join(sorted(devices)) or '—'}); no external test set was scored.")
    if burned:
        lines.append(f"- {burned} DICOM video(s) declare burned-in annotation: text in the image the CNN may learn from.")
    lines += [""]

    lines += ["## Code and config", "",
              f"- lus_core {lus_core.__version__}; config sha256 `{hashlib.sha256(config_json(config).encode()).hexdigest()}` "
              "(canonical JSON of the run's config, as every output of the run carries it).",
              f"- Selected model `models/{sel['backbone']}/all.pt` sha256 `{model_sha256 or 'not available'}`.",
              f"- Seed {config['seed']}; classes {classes}.", ""]
    return "\n".join(lines)


def write_model_card(out: str | Path, summary_path, split_path, index_path, config: Mapping, model_files: Mapping,
                     title: str, nested_path=None) -> Path:
    """The report step's ``report/model_card.md`` from the files it was given (``nested_path``:
    nested/estimate.json of a nested run)."""
    summary = read_json(summary_path)
    index = read_frame_index(index_path)
    model = model_files.get(summary["selected"]["backbone"])
    text = render(summary, read_json(split_path), index, store_facts(index["h5"].unique()), config,
                  sha256_file(model) if model else None, title, read_json(nested_path) if nested_path else None)
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    return Path(out)


def model_card_text(run) -> str:
    """The card of a finished run (lus_core.runs.reader.FinishedRun), its files checked against the manifest."""
    index = read_frame_index(run.verified(run.layout.frame_index()))
    stores = run.verified_stores(index["h5"].unique())
    model = run.verified(run.layout.model(run.selected()["backbone"], "all"))
    return render(run.summary, run.split, index, store_facts(stores.values()), run.config, sha256_file(model),
                  run.root.name, run.nested if run.is_nested else None)
