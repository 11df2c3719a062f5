"""What the Snakefile computes when it builds the DAG (before any job runs): the video table and
the checks of the config against the dataset, so that an impossible split stops the run before
any video is extracted."""

from __future__ import annotations

import zlib
from pathlib import Path

from lus_core.cnn.settings import cache_enabled
from lus_core.config import ConfigError, source_of


def check_split_feasible(config: dict, videos: dict[str, dict], source="config") -> None:
    """split.k_test, split.n_folds and the forced patients against the patients that have labels.

    Synthetic videos are labelled later, so every planned patient counts; a real video counts
    when it has label ranges (unlabelled ones are skipped or refused before this).
    """
    split = config["split"]
    patients = sorted({v["patient"] for v in videos.values() if v["ranges"] is None or v["ranges"]})
    n, k, folds = len(patients), split["k_test"], split["n_folds"]
    where = source_of(source, "split.k_test")
    if k >= n:
        raise ConfigError(
            f"{where}: key 'split.k_test' = {k} test patients, but only {n} patient(s) have labels; "
            f"lower split.k_test (at most {max(n - folds, 0)} leaves {folds} training patients for split.n_folds)"
        )
    if n - k < folds:
        raise ConfigError(
            f"{source_of(source, 'split.n_folds')}: key 'split.n_folds' = {folds} folds need at least {folds} training "
            f"patients, but {n} labelled patient(s) minus split.k_test = {k} leaves {n - k}; lower split.n_folds "
            "or split.k_test"
        )
    labelled = [v for v in videos.values() if v["ranges"]]
    if labelled and all(v["ranges"] is not None for v in videos.values()):
        # real data: every class needs a labelled video, or the split cannot balance it
        seen = {r[2] for v in labelled for r in v["ranges"]}
        missing = [c for i, c in enumerate(config["classes"]) if i not in seen]
        if missing:
            raise ConfigError(
                f"{source_of(source, 'classes')}: key 'classes' lists {missing}, but no labelled video has that "
                "score; remove it from classes or add videos with that score"
            )
    for key in ("force_test", "force_train"):
        unknown = sorted(set(map(str, split[key])) - set(patients))
        if unknown:
            raise ConfigError(
                f"{source_of(source, f'split.{key}')}: key 'split.{key}' names patient(s) {unknown} that have no "
                f"labelled video (known: {patients[:20]})"
            )
    if len(split["force_test"]) > k:
        raise ConfigError(
            f"{source_of(source, 'split.force_test')}: key 'split.force_test' forces {len(split['force_test'])} "
            f"patients into the test set but split.k_test = {k}"
        )


def video_table(config: dict, synth_dir: str) -> dict[str, dict]:
    """Video id -> {path, patient, ranges, findings} known when the DAG is built.

    Synthetic videos are planned from the config (generated later by a job); real videos
    are discovered and matched with their labels now, so that every labelling problem is
    reported before any job runs.
    """
    ds = config["dataset"]
    # each Snakemake start imports only what the config's kind of data needs
    if ds["synthetic"]["enabled"]:
        from lus_core.synth.cohort import planned_videos

        return {
            Path(name).stem: {"path": f"{synth_dir}/videos/{name}", "patient": patient, "ranges": None, "findings": None}
            for name, patient in planned_videos(ds["synthetic"])
        }
    from lus_core.frames.identity import results_salt
    from lus_core.frames.labels import build_video_table

    # asked for only when the dataset holds DICOM files (the salt file is made on first use)
    def salt() -> bytes:
        return results_salt(config["results"], ds["patient_salt_file"])

    return {
        e.video: {"path": e.path, "patient": e.patient, "ranges": e.ranges, "findings": e.findings, "source": e.source}
        for e in build_video_table(ds, config["classes"], salt=salt)
    }


# Relative cost of training a backbone end to end (forward GFLOPs of one 224-px image): the
# scheduler starts the longest trainings first, so that short jobs fill the gaps instead of one
# long training running alone at the end (on 2 cores that idle tail was 45 s of the default run).
TRAIN_COST = {"vgg16": 15.5, "resnet18": 1.8, "efficientnet_lite2": 0.9, "efficientnet_lite1": 0.6, "efficientnet_lite0": 0.4, "squeezenet1_1": 0.35, "scratch": 0.1}
# What consumes a finished model (inference, confidence, indexes) runs before further trainings,
# so that a backbone's chain to the report overlaps the trainings of the next one.
AFTER_TRAIN_PRIORITY = 100


def train_priority(config: dict, backbone: str, fold: str) -> int:
    """Scheduling priority of a `train` job (below AFTER_TRAIN_PRIORITY): its relative cost, the
    `all` model (more patients, and every test prediction waits for it) a little higher; output
    layers trained on cached embeddings cost next to nothing."""
    if cache_enabled(config, backbone):
        return 0
    cost = TRAIN_COST.get(backbone, 1.0) * (1.5 if fold == "all" else 1.0)
    return min(AFTER_TRAIN_PRIORITY - 1, max(1, round(4 * cost)))


def job_shards(videos, n_jobs: int) -> dict[int, list[str]]:
    """The videos of a per-video step (extraction, embedding) in at most `n_jobs` jobs (empty
    jobs dropped). A video's job is a hash of its name, so adding or removing a video changes one
    job's list: only that job reruns. One job per video would cost a Python start-up (1.5 s for
    extraction, 6 s with torch for embedding, on 2 cores) per video, for about 0.1 s (extraction)
    or 1 s (embedding) of work."""
    shards: dict[int, list[str]] = {}
    for video in sorted(videos):
        shards.setdefault(zlib.crc32(video.encode()) % n_jobs, []).append(video)
    return dict(sorted(shards.items()))
