"""What the Snakefile computes when it builds the DAG (before any job runs): the video table and
the checks of the config against the dataset, so that an impossible split stops the run before
any video is extracted."""

from __future__ import annotations

from pathlib import Path

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
    """Video id -> {path, patient, ranges} known when the DAG is built.

    Synthetic videos are planned from the config (generated later by a job); real videos
    are discovered and matched with their labels now, so that every labelling problem is
    reported before any job runs.
    """
    ds = config["dataset"]
    if ds["synthetic"]["enabled"]:
        from lus_core.synth import planned_videos

        return {
            Path(name).stem: {"path": f"{synth_dir}/videos/{name}", "patient": patient, "ranges": None}
            for name, patient in planned_videos(ds["synthetic"])
        }
    from lus_core.ingest import build_video_table

    return {
        e.video: {"path": e.path, "patient": e.patient, "ranges": e.ranges}
        for e in build_video_table(ds, config["classes"])
    }
