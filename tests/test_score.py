"""`lus score`: a `lus predict` folder written by hand (frames.csv and summary.json with predict's
columns, seeded random scores) against a labels CSV; every number checked against scikit-learn,
the intervals against patients resampled by hand."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    f1_score,
)
from sklearn.metrics import (
    confusion_matrix as sk_confusion_matrix,
)

from lus_core.frames.labels import video_id
from lus_core.metrics import patient_resample_counts
from lus_core.runs.score import BASELINE, SCORE_MANIFEST, LabelsError, read_labels, run_score
from tests.workflow_helpers import lus

CLASSES = [0, 1, 2, 3]
FINDINGS = ("a_lines", "b_lines")
N_BOOT = 200
VIDEO_SCORES = ("score_max", "score_mean", "score_majority", "score_confident_mean", "score_attention")


def sklearn_metrics(n_classes: int) -> dict:
    labels = list(range(n_classes))
    return {
        "accuracy": accuracy_score,
        "balanced_accuracy": balanced_accuracy_score,
        "macro_f1": lambda t, p: f1_score(t, p, average="macro"),
        "qwk": lambda t, p: cohen_kappa_score(t, p, weights="quadratic", labels=labels),
    }


class Cohort:
    """A `lus predict` folder and the truth behind it: 8 patients x 2 videos x 5 frames."""

    def __init__(self, root, classes=CLASSES, n_patients=8, videos_per_patient=2, frames_per_video=5, seed=0):
        rng = np.random.default_rng(seed)
        c = len(classes)
        self.classes, self.pred_dir = list(classes), root / "pred"
        self.pred_dir.mkdir(parents=True)
        self.label, self.patient, rows, videos = {}, {}, [], {}
        for p in range(n_patients):
            for v in range(videos_per_patient):
                vid = f"patient_{p:02d}_v{v}"
                truth = int(rng.integers(c))
                # the CNN is right about 60% of the time, so the metrics are neither 0 nor 1
                cnn = np.where(rng.random(frames_per_video) < 0.6, truth, rng.integers(0, c, frames_per_video))
                soft = rng.dirichlet(np.ones(c), size=frames_per_video)
                trusted = rng.random(frames_per_video) > 0.3
                fallback = np.where(trusted, -1, rng.integers(0, c, frames_per_video))
                final = np.where(trusted, cnn, fallback)
                rows += [{"video": vid, "frame": 3 * i, **{f"p_{k}": soft[i, j] for j, k in enumerate(classes)},
                          "cnn_score": classes[cnn[i]], "confidence": float(rng.random()), "trusted": bool(trusted[i]),
                          "fallback_score": classes[fallback[i]] if fallback[i] >= 0 else "",
                          "neighbor_frame_ids": "" if trusted[i] else "4 9 17", "final_score": classes[final[i]],
                          **{f"p_finding_{f}": float(rng.random()) for f in FINDINGS}}
                         for i in range(frames_per_video)]
                attention = rng.dirichlet(np.ones(c))
                videos[vid] = {"source": f"/site2/{vid}.mp4", "n_frames": frames_per_video,
                               "untrusted_frames": int((~trusted).sum()),
                               "score_max": classes[final.max()], "score_mean": classes[int(np.floor(final.mean() + 0.5))],
                               "score_majority": classes[int(np.bincount(final, minlength=c).argmax())],
                               "score_confident_mean": classes[int(rng.integers(c))],
                               "score_attention": classes[int(attention.argmax())],
                               "p_attention": {str(k): round(float(a), 4) for k, a in zip(classes, attention, strict=True)},
                               **{f"p_finding_{f}": 0.5 for f in FINDINGS}, "decoded_fraction": 1.0}
                self.label[vid], self.patient[vid] = truth, f"{p:02d}"
        self.frames = pd.DataFrame(rows)
        self.frames.to_csv(self.pred_dir / "frames.csv", index=False)
        self.summary = {"run": "/runs/site1", "configuration": {"config_id": "scratch|svc|softmax|5|weighted"},
                        "videos": videos, "failed": {}, "classes": self.classes, "min_decoded_fraction": 0.9}
        self.write_summary()

    def write_summary(self):
        (self.pred_dir / "summary.json").write_text(json.dumps(self.summary, indent=2))

    def rename(self, videos: dict[str, tuple[str, str]]):
        """Give videos the id and source `lus predict` records for other files: {id: (new id, source)}."""
        for old, (new, source) in videos.items():
            self.summary["videos"][new] = {**self.summary["videos"].pop(old), "source": source}
            self.label[new], self.patient[new] = self.label.pop(old), self.patient.pop(old)
        self.frames["video"] = self.frames["video"].replace({old: new for old, (new, _) in videos.items()})
        self.frames.to_csv(self.pred_dir / "frames.csv", index=False)
        self.write_summary()

    def labels_csv(self, path, videos=None, **extra_rows) -> str:
        videos = list(self.label) if videos is None else videos
        table = pd.DataFrame({"video": videos, "score": [self.classes[self.label[v]] for v in videos],
                              "patient": [f"P{self.patient[v]}" for v in videos]})
        if extra_rows:
            table = pd.concat([table, pd.DataFrame(list(extra_rows.values()))], ignore_index=True)
        table.to_csv(path, index=False)
        return path


def level_arrays(cohort: Cohort, level: str, videos: list[str]):
    """The truth, patients and predictions of a level, straight from the data written."""
    if level == "frame":
        frames = cohort.frames[cohort.frames["video"].isin(videos)]
        index = {c: i for i, c in enumerate(cohort.classes)}
        y = frames["video"].map(cohort.label).to_numpy()
        patients = frames["video"].map(cohort.patient).to_numpy()
        preds = {col: frames[col].map(index).to_numpy() for col in ("cnn_score", "final_score")}
    else:
        y = np.array([cohort.label[v] for v in videos])
        patients = np.array([cohort.patient[v] for v in videos])
        preds = {k: np.array([cohort.classes.index(cohort.summary["videos"][v][k]) for v in videos]) for k in VIDEO_SCORES}
    majority = int(np.bincount([cohort.label[v] for v in videos], minlength=len(cohort.classes)).argmax())
    preds[BASELINE] = np.full(len(y), majority)
    return y, patients, preds


def by_hand(y, patients, preds, n_classes, n_boot, ci=0.95, seed=0):
    """Each metric of each prediction on every patient resample, rows built explicitly: each
    patient's rows repeated as often as the resample draws the patient."""
    metrics = sklearn_metrics(n_classes)
    uniq = np.unique(patients)
    members = [np.flatnonzero(patients == p) for p in uniq]
    counts = patient_resample_counts(len(uniq), n_boot, seed)
    samples = {(col, m): np.empty(n_boot) for col in preds for m in metrics}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns on resamples that miss a class
        for b, row in enumerate(counts):
            idx = np.concatenate([np.tile(members[p], k) for p, k in enumerate(row) if k])
            for col, pred in preds.items():
                for m, fn in metrics.items():
                    samples[col, m][b] = fn(y[idx], pred[idx])
    alpha = (1 - ci) / 2

    def interval(s):
        s = s[~np.isnan(s)]
        return np.quantile(s, [alpha, 1 - alpha])

    return samples, interval


@pytest.fixture
def cohort(tmp_path):
    return Cohort(tmp_path)


@pytest.fixture
def scored(cohort, tmp_path):
    labels = cohort.labels_csv(tmp_path / "labels.csv")
    result = run_score(cohort.pred_dir, labels, patient_regex=r"patient_(\d+)_", n_bootstrap=N_BOOT)
    return cohort, result


def test_point_estimates_equal_sklearn(scored):
    cohort, result = scored
    record = json.loads((cohort.pred_dir / "score" / "score.json").read_text())
    videos = sorted(cohort.label)
    for level in ("frame", "video"):
        y, _, preds = level_arrays(cohort, level, videos)
        got = record["levels"][level]
        assert got["n"] == len(y) and got["n_patients"] == 8
        assert set(got["scores"]) == set(preds)
        for col, pred in preds.items():
            for m, fn in sklearn_metrics(len(CLASSES)).items():
                expected = fn(y, pred)
                assert np.isclose(got["scores"][col]["metrics"][m]["estimate"], expected), (level, col, m)
                if col != BASELINE:
                    diff = got["scores"][col]["vs_baseline"][m]["diff"]
                    assert np.isclose(diff, expected - fn(y, preds[BASELINE])), (level, col, m)
            assert got["scores"][col]["confusion_matrix"] == sk_confusion_matrix(y, pred, labels=range(4)).tolist()
    assert record["baseline"]["class"] == CLASSES[preds[BASELINE][0]]
    assert "labels being scored" in record["baseline"]["chosen_on"]


@pytest.mark.filterwarnings("ignore")
def test_intervals_equal_patients_resampled_by_hand(cohort, tmp_path):
    # fewer resamples and columns than elsewhere: sklearn by hand costs about 1 ms a call; the
    # columns left out go through the very same code
    n_boot, ci, seed = 100, 0.9, 5
    labels = cohort.labels_csv(tmp_path / "labels.csv")
    record = run_score(cohort.pred_dir, labels, patient_regex=r"patient_(\d+)_", n_bootstrap=n_boot, ci=ci,
                       seed=seed).record
    videos = sorted(cohort.label)
    for level, columns in (("frame", ("cnn_score", "final_score")), ("video", ("score_mean", "score_attention"))):
        y, patients, preds = level_arrays(cohort, level, videos)
        preds = {col: preds[col] for col in (*columns, BASELINE)}
        samples, interval = by_hand(y, patients, preds, len(CLASSES), n_boot, ci, seed)
        for col in preds:
            for m in sklearn_metrics(len(CLASSES)):
                got = record["levels"][level]["scores"][col]
                assert np.allclose([got["metrics"][m]["lo"], got["metrics"][m]["hi"]], interval(samples[col, m])), \
                    (level, col, m)
                if col != BASELINE:  # paired: the same resamples for the score and the baseline
                    d = samples[col, m] - samples[BASELINE, m]
                    assert np.allclose([got["vs_baseline"][m]["lo"], got["vs_baseline"][m]["hi"]], interval(d)), \
                        (level, col, m)


def test_metrics_csv_has_a_row_per_level_and_score(scored):
    cohort, result = scored
    table = pd.read_csv(cohort.pred_dir / "score" / "metrics.csv")
    expected = {("frame", c) for c in ("cnn_score", "final_score", BASELINE)} | {
        ("video", c) for c in (*VIDEO_SCORES, BASELINE)}
    assert set(zip(table["level"], table["score"], strict=True)) == expected and len(table) == len(expected)
    row = table[(table["level"] == "video") & (table["score"] == "score_attention")].iloc[0]
    qwk = result.record["levels"]["video"]["scores"]["score_attention"]["metrics"]["qwk"]
    assert np.isclose(row["qwk"], qwk["estimate"]) and np.isclose(row["qwk_lo"], qwk["lo"])
    assert table.loc[table["score"] == BASELINE, "qwk_vs_baseline"].isna().all()


def test_page_names_every_score_and_is_self_contained(scored):
    cohort, _ = scored
    page = (cohort.pred_dir / "score" / "index.html").read_text()
    for col in ("cnn_score", "final_score", *VIDEO_SCORES, BASELINE):
        assert f"<b>{col}</b>" in page, col  # its confusion matrix
    assert "<style>" in page and "<script" not in page and "src=\"http" not in page and "<link" not in page
    assert "patient_(\\d+)_" in page


def test_patient_column_and_regex_group_alike_and_none_is_per_video(cohort, tmp_path):
    labels = cohort.labels_csv(tmp_path / "labels.csv")
    by_regex = run_score(cohort.pred_dir, labels, patient_regex=r"patient_(\d+)_", n_bootstrap=N_BOOT,
                         out_dir=tmp_path / "regex").record
    by_column = run_score(cohort.pred_dir, labels, patient_col="patient", n_bootstrap=N_BOOT,
                          out_dir=tmp_path / "column").record
    alone = run_score(cohort.pred_dir, labels, n_bootstrap=N_BOOT, out_dir=tmp_path / "alone").record
    assert by_regex["patients"]["of_video"] == cohort.patient
    assert by_column["patients"]["of_video"] == {v: f"P{p}" for v, p in cohort.patient.items()}
    assert by_regex["patients"]["n"] == by_column["patients"]["n"] == 8
    assert alone["patients"]["n"] == 16 and "each video is its own patient" in alone["patients"]["from"]
    # the same grouping (sorted alike) gives the same resamples, hence the same intervals
    assert by_regex["levels"] == by_column["levels"]
    assert alone["levels"]["video"]["scores"]["score_max"]["metrics"]["qwk"] != \
        by_regex["levels"]["video"]["scores"]["score_max"]["metrics"]["qwk"]


def test_patient_regex_without_group_or_match_is_refused(cohort, tmp_path):
    labels = cohort.labels_csv(tmp_path / "labels.csv")
    with pytest.raises(ValueError, match="needs a group"):
        run_score(cohort.pred_dir, labels, patient_regex=r"patient_\d+", n_bootstrap=N_BOOT)
    with pytest.raises(ValueError, match=r"no patient in the video id\(s\) patient_00_v0"):
        run_score(cohort.pred_dir, labels, patient_regex=r"^case_(\d+)", n_bootstrap=N_BOOT)
    assert not (cohort.pred_dir / "score").exists()


def test_labels_matching_no_video_are_refused(cohort, tmp_path):
    path = tmp_path / "other.csv"
    pd.DataFrame({"video": ["site3_a", "site3_b"], "score": [0, 1]}).to_csv(path, index=False)
    run = lus("score", cohort.pred_dir, "--labels", path)
    assert run.returncode == 2
    assert run.stderr.startswith("lus score: error: ") and str(path) in run.stderr
    assert "no labelled video" in run.stderr and "site3_a" in run.stderr
    assert not (cohort.pred_dir / "score").exists()


def test_unknown_classes_are_refused_naming_the_lines(cohort, tmp_path):
    path = cohort.labels_csv(tmp_path / "labels.csv")
    table = pd.read_csv(path, dtype=str)
    table.loc[2, "score"], table.loc[5, "score"] = "7", "moderate"
    table.to_csv(path, index=False)
    run = lus("score", cohort.pred_dir, "--labels", path)
    assert run.returncode == 2 and str(path) in run.stderr
    assert f"line 4 ({table.loc[2, 'video']}: '7')" in run.stderr
    assert f"line 7 ({table.loc[5, 'video']}: 'moderate')" in run.stderr
    assert "[0, 1, 2, 3]" in run.stderr


def test_class_names_compare_as_text(cohort, tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("video,score\npatient_00_v0,2.0\npatient_00_v1, 3 \npatient_01_v0,0\n")
    assert read_labels(path, CLASSES)["label"].tolist() == [2, 3, 0]
    # a spreadsheet's export, with a byte-order mark before the first column's name (pandas drops it)
    path.write_text("video,score\npatient_00_v0,covid\npatient_00_v1,healthy\n", encoding="utf-8-sig")
    assert read_labels(path, ["covid", "pneumonia", "healthy"])["label"].tolist() == [0, 2]


@pytest.mark.parametrize("text,problem", [
    ("clip,score\na,1\n", r"no column 'video' \(--video-col\)"),
    ("video,score\na,1\na,2\n", r"line 2 \('a'\), line 3 \('a'\) name the same video more than once"),
    ("video,score\n,1\n", r"line 2 \(''\) have no video id"),
    ("video,score\n", "no rows"),
    ("", "cannot read the labels CSV"),
    ("video,score\na,1\nb,2,extra\n", r"cannot read the labels CSV \(line 3 has 3 fields, the header 2\)"),
])
def test_malformed_labels_are_refused(tmp_path, text, problem):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem):
        read_labels(path, CLASSES)


@pytest.mark.parametrize("text,line", [
    # pandas skips blank (and whitespace-only) lines: the bad label is on line 6, not the table's 3rd row
    ("video,score\npatient_00_v0,1\n\npatient_00_v1,2\n   \npatient_01_v0,9\n", 6),
    # a quoted cell spanning lines: the rows after it start lower in the file
    ('video,score,notes\npatient_00_v0,1,"B-lines,\nleft base"\n\npatient_00_v1,2,ok\npatient_01_v0,9,\n', 6),
])
def test_errors_name_the_file_line_past_blank_lines_and_multiline_cells(tmp_path, text, line):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(LabelsError, match=rf"line {line} \(patient_01_v0: '9'\)$"):
        read_labels(path, CLASSES)
    path.write_text(text.replace("patient_01_v0,9", "patient_00_v0,3"))  # now a repeated video, not a bad label
    with pytest.raises(LabelsError, match=rf"line 2 \('patient_00_v0'\), line {line} \('patient_00_v0'\) name the same"):
        read_labels(path, CLASSES)
    path.write_text(text.replace("patient_01_v0,9", "patient_01_v0,3"))
    labels = read_labels(path, CLASSES)
    assert labels["line"].tolist() == [2, text.count("\n", 0, text.index("patient_00_v1")) + 1, line]
    assert labels["label"].tolist() == [1, 2, 3]


def test_labels_naming_files_score_their_videos(cohort, tmp_path):
    """A dataset's own labels CSV names files, whose ids `lus predict` made file-name-safe: such a
    row matches by the source's file name, stem or path (the workflow's rule), an id as before."""
    site = tmp_path / "site2"
    site.mkdir()
    for name in ("Cov-Atlas-Day+2.gif", "scan (1).avi"):
        (site / name).write_bytes(b"")
    sources = {"patient_00_v0": site / "Cov-Atlas-Day+2.gif",
               "patient_00_v1": Path("/moved/patient 00 second clip.mp4"),  # not on this machine
               "patient_01_v0": site / "scan (1).avi"}
    ids = {old: video_id(source) for old, source in sources.items()}
    assert list(ids.values()) == ["Cov-Atlas-Day_2", "patient_00_second_clip", "scan__1_"]
    cohort.rename({old: (ids[old], str(source)) for old, source in sources.items()})
    cohort.summary["failed"] = {"Broken_clip": {"source": str(site / "Broken clip.mp4"), "reason": "cannot decode"}}
    cohort.write_summary()
    by_id = cohort.labels_csv(tmp_path / "by_id.csv")
    named = {"Cov-Atlas-Day_2": "Cov-Atlas-Day+2.gif",  # file name
             "patient_00_second_clip": "patient 00 second clip",  # stem
             "scan__1_": "site2/scan (1).avi"}  # path relative to the labels file
    table = pd.read_csv(by_id, dtype=str)
    table["video"] = table["video"].replace(named)
    table.loc[len(table)] = ["Broken clip.mp4", "1", "P99"]
    table.to_csv(tmp_path / "by_name.csv", index=False)
    expected = run_score(cohort.pred_dir, by_id, patient_col="patient", n_bootstrap=N_BOOT,
                         out_dir=tmp_path / "by_id").record
    record = run_score(cohort.pred_dir, tmp_path / "by_name.csv", patient_col="patient", n_bootstrap=N_BOOT,
                       out_dir=tmp_path / "by_name").record
    assert record["videos"]["scored"] == sorted(cohort.label) and record["videos"]["labelled_as"] == named
    assert record["videos"]["labelled_not_predicted"] == {
        "Broken clip.mp4": "`lus predict` could not score it: cannot decode"}
    assert record["levels"] == expected["levels"] and record["patients"] == expected["patients"]
    assert expected["videos"]["labelled_as"] == {}


@pytest.mark.parametrize("rows,problem", [
    ([["x.mp4", "1"]], r"line 2 \('x.mp4'\) names video a__x.mp4 \(/site2/a/x.mp4\) and video b__x.mp4 "
                       r"\(/site2/b/x.mp4\); name each video by its id or its path"),
    ([["a__x.mp4", "1"], ["Cov-Atlas-Day+2", "3"], ["Cov-Atlas-Day_2", "0"]],
     r"video Cov-Atlas-Day_2 \(/site2/Cov-Atlas-Day\+2.gif\) is named by line 3 \('Cov-Atlas-Day\+2'\) "
     r"and line 4 \('Cov-Atlas-Day_2'\); keep one row per video"),
])
def test_a_row_naming_two_videos_or_a_video_named_twice_is_refused(cohort, tmp_path, rows, problem):
    cohort.rename({"patient_00_v0": ("a__x.mp4", "/site2/a/x.mp4"), "patient_00_v1": ("b__x.mp4", "/site2/b/x.mp4"),
                   "patient_01_v0": ("Cov-Atlas-Day_2", "/site2/Cov-Atlas-Day+2.gif")})
    path = tmp_path / "labels.csv"
    pd.DataFrame(rows, columns=["video", "score"]).to_csv(path, index=False)
    run = lus("score", cohort.pred_dir, "--labels", path)
    assert run.returncode == 2 and run.stderr.startswith(f"lus score: error: {path}: ")
    assert re.search(problem, run.stderr), run.stderr
    assert not (cohort.pred_dir / "score").exists()


def test_a_row_that_is_an_id_names_that_video_alone(cohort, tmp_path):
    # x.mp4 and x.MP4 of one folder: ids with their extensions; the row "x.mp4" is one video's id
    # and the other's stem, and names the first alone, as it did before rows could name files
    cohort.rename({"patient_00_v0": ("x.mp4", "/site2/x.mp4"), "patient_00_v1": ("x.MP4", "/site2/x.MP4")})
    path = cohort.labels_csv(tmp_path / "labels.csv", [v for v in cohort.label if v != "x.MP4"])
    record = run_score(cohort.pred_dir, path, patient_col="patient", n_bootstrap=N_BOOT).record
    assert record["videos"]["predicted_without_label"] == ["x.MP4"] and "x.mp4" in record["videos"]["scored"]


def test_unlabelled_and_unpredicted_videos_are_reported(cohort, tmp_path):
    cohort.summary["failed"] = {"broken": {"source": "/site2/broken.mp4", "reason": "cannot decode"}}
    cohort.write_summary()
    scored = sorted(cohort.label)[2:]  # the first patient's two videos have no label
    path = cohort.labels_csv(tmp_path / "labels.csv", scored,
                             broken={"video": "broken", "score": 1, "patient": "P99"},
                             elsewhere={"video": "never_sent", "score": 2, "patient": "P98"})
    run = lus("score", cohort.pred_dir, "--labels", path, "--patient-col", "patient", "--n-bootstrap", N_BOOT)
    assert run.returncode == 0, run.stderr
    record = json.loads((cohort.pred_dir / "score" / "score.json").read_text())
    assert record["videos"]["predicted_without_label"] == ["patient_00_v0", "patient_00_v1"]
    assert record["videos"]["labelled_not_predicted"] == {
        "broken": "`lus predict` could not score it: cannot decode", "never_sent": "not among the predicted videos"}
    assert record["videos"]["scored"] == scored and record["levels"]["video"]["n"] == 14
    assert record["levels"]["frame"]["n"] == 14 * 5 and record["patients"]["n"] == 7
    assert len(record["warnings"]) == 2
    assert "lus score: warning: 2 predicted video(s) have no label" in run.stderr and "patient_00_v1" in run.stderr
    assert "never_sent (not among the predicted videos)" in run.stderr
    assert "never_sent" in (cohort.pred_dir / "score" / "index.html").read_text()


def test_cli_end_to_end_with_text_classes(tmp_path):
    cohort = Cohort(tmp_path, classes=["covid", "pneumonia", "healthy"], n_patients=6, seed=3)
    labels = cohort.labels_csv(tmp_path / "labels.csv")
    out = tmp_path / "external"
    run = lus("score", cohort.pred_dir, "--labels", labels, "--patient-regex", r"patient_(\d+)_", "--out", out,
              "--n-bootstrap", 50, "--ci", 0.9, "--seed", 7)
    assert run.returncode == 0, run.stderr
    assert f"wrote {out}/score.json" in run.stdout and "score_attention" in run.stdout
    record = json.loads((out / "score.json").read_text())
    assert record["bootstrap"] == {**record["bootstrap"], "n_boot": 50, "ci": 0.9, "seed": 7}
    assert sorted(p.name for p in out.iterdir()) == sorted(["index.html", "metrics.csv", "score.json", SCORE_MANIFEST])
    y, _, preds = level_arrays(cohort, "video", sorted(cohort.label))
    got = record["levels"]["video"]["scores"]["score_majority"]["metrics"]["qwk"]["estimate"]
    assert np.isclose(got, cohort_kappa(y, preds["score_majority"], 3))
    assert not run.stderr  # every video labelled, every label predicted: no warning


def cohort_kappa(y, pred, n_classes):
    return cohen_kappa_score(y, pred, weights="quadratic", labels=list(range(n_classes)))


def test_out_folder_rules(cohort, tmp_path):
    labels = cohort.labels_csv(tmp_path / "labels.csv")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    run = lus("score", cohort.pred_dir, "--labels", labels, "--out", mine)
    assert run.returncode == 2 and "not an earlier `lus score` output" in run.stderr
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    # the prediction folder itself is not ours either
    run = lus("score", cohort.pred_dir, "--labels", labels, "--out", cohort.pred_dir)
    assert run.returncode == 2 and sorted(p.name for p in cohort.pred_dir.iterdir()) == ["frames.csv", "summary.json"]
    # an earlier `lus score` output is replaced, files put beside it are kept
    out = cohort.pred_dir / "score"
    assert lus("score", cohort.pred_dir, "--labels", labels, "--n-bootstrap", 20).returncode == 0
    (out / "notes.txt").write_text("kept")
    assert lus("score", cohort.pred_dir, "--labels", labels, "--n-bootstrap", 30).returncode == 0
    assert json.loads((out / "score.json").read_text())["bootstrap"]["n_boot"] == 30
    assert (out / "notes.txt").read_text() == "kept"
    assert not [p for p in cohort.pred_dir.iterdir() if p.name.endswith(".partial")]


@pytest.mark.parametrize("args,problem", [
    (("--n-bootstrap", "0"), "--n-bootstrap must be at least 1"),
    (("--ci", "95"), "--ci must lie between 0 and 1"),
    (("--patient-col", "ward"), r"no column 'ward' \(--patient-col\)"),
])
def test_bad_options_are_refused(cohort, tmp_path, args, problem):
    labels = cohort.labels_csv(tmp_path / "labels.csv")
    run = lus("score", cohort.pred_dir, "--labels", labels, *args)
    assert run.returncode == 2 and "lus score: error:" in run.stderr
    assert re.search(problem, run.stderr), run.stderr


def test_incomplete_prediction_folder_is_refused(cohort, tmp_path):
    labels = cohort.labels_csv(tmp_path / "labels.csv")
    frames = pd.read_csv(cohort.pred_dir / "frames.csv", dtype=str)
    frames[frames["video"] != "patient_03_v1"].to_csv(cohort.pred_dir / "frames.csv", index=False)
    run = lus("score", cohort.pred_dir, "--labels", labels)
    assert run.returncode == 2 and "frames.csv: no frame of the video(s) patient_03_v1" in run.stderr
    (cohort.pred_dir / "summary.json").unlink()
    run = lus("score", cohort.pred_dir, "--labels", labels)
    assert run.returncode == 2 and "summary.json: not found" in run.stderr
