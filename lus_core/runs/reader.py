"""The one reader of a finished run: ``FinishedRun(results_folder)``.

Everything that reads a run after the workflow made it (``lus predict``, ``lus summarize``, the
recipes table, the run-time record, benchmarks) goes through it: where each file lives
(:mod:`lus_core.runs.layout`), the evaluation's summary and matrix (read by the evaluation's own
readers), the configuration chosen on the training patients, the split, the video tables, the
run's config as its manifest recorded it, and every file ``lus predict`` loads checked against the
manifest's checksums first.
"""

from __future__ import annotations

import json
import math
from functools import cached_property
from pathlib import Path

import pandas as pd

from lus_core.cnn.settings import ensemble_of
from lus_core.config import with_defaults
from lus_core.evaluation.matrix import DEPLOYABLE, read_matrix
from lus_core.evaluation.summary import read_summary, selected_of
from lus_core.io_utils import read_json
from lus_core.runs.layout import RunLayout
from lus_core.runs.manifest import RunError, load_manifest, manifest_path, verified_path
from lus_core.split.scopes import DEPLOYED, scope_split
from lus_core.videolevel.table import read_video_table

CONFIG_FIELDS = ("config_id", "row_type", "backbone", "confidence", "space", "k", "fallback", "diversity")


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


class FinishedRun:
    """A results folder the workflow finished (its manifest is written last)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise RunError(f"{self.root}: run folder not found")
        manifest_path(self.root)  # refuses a folder that is not a finished run, before any other read
        self.layout = RunLayout(str(self.root))

    def path(self, relative_or_layout: str) -> Path:
        return Path(relative_or_layout) if Path(relative_or_layout).is_absolute() else self.root / relative_or_layout

    # ---------------------------------------------------------------- the evaluation
    @cached_property
    def summary(self) -> dict:
        return read_summary(self.layout.summary())

    @cached_property
    def matrix(self) -> pd.DataFrame:
        return read_matrix(self.layout.matrix())

    @cached_property
    def split(self) -> dict:
        return read_json(self.layout.split())

    def selected(self) -> dict:
        """The configuration chosen on the training patients (summary.json ``selected``)."""
        return selected_of(self.summary, self.layout.summary())

    def configuration(self, name: str = "selected") -> dict:
        """One configuration's fields (``CONFIG_FIELDS``, missing values None): ``selected`` (or its
        old name ``best``) is the one chosen on the training patients; any other name a row of the
        matrix. Oracle rows are refused: they cannot be deployed."""
        if name in ("selected", "best"):
            row = self.selected()
        else:
            hits = self.matrix[self.matrix["config_id"] == name]
            if hits.empty:
                deployable = self.matrix[self.matrix["row_type"].isin(DEPLOYABLE)]["config_id"]
                raise RunError(f"{self.layout.matrix()}: no configuration named {name!r}; "
                               f"e.g. {deployable.iloc[0]!r}, or 'selected'")
            row = hits.iloc[0].to_dict()
        if row["row_type"] not in DEPLOYABLE:
            raise RunError(f"configuration {row['config_id']!r} is an oracle row and cannot be deployed")
        return {key: (None if _missing(row.get(key)) else row.get(key)) for key in CONFIG_FIELDS}

    def video_table(self, backbone: str) -> pd.DataFrame:
        return read_video_table(self.layout.video_table(backbone), scope_split(self.split, DEPLOYED)["test_patients"])

    @property
    def is_nested(self) -> bool:
        """Whether the run is nested cross-validation (split.outer_folds > 1): its root is the
        deployed scope, trained and chosen on every patient; its estimate is `nested`."""
        return "outer" in self.split

    @cached_property
    def nested(self) -> dict:
        """nested/estimate.json (lus_core.evaluation.nested) of a nested run."""
        if not self.is_nested:
            raise RunError(f"{self.layout.split()}: not a nested run (split.outer_folds 1)")
        return read_json(self.layout.nested())

    def nested_videos(self) -> pd.DataFrame:
        """nested/videos.csv of a nested run: every video's answer from the outer fold that tested it."""
        self.nested  # noqa: B018 - refuses a run that is not nested
        return pd.read_csv(self.layout.nested_videos(), dtype={"video": str, "patient": str})

    def video_level(self, backbone: str) -> list[dict]:
        """The video scores of a backbone in summary.json (validation and test), or an error when the
        run fitted none (video_model.enabled: false)."""
        level = self.summary.get("video_level") or {}
        if backbone not in level:
            raise ValueError(f"{self.layout.summary()}: no video-level scores of {backbone} (the run had "
                             "video_model.enabled: false)")
        return level[backbone]

    def findings(self) -> list[dict]:
        return self.summary.get("findings") or []

    # ---------------------------------------------------------------- the manifest
    @cached_property
    def manifest(self) -> dict:
        return load_manifest(self.root)

    @cached_property
    def config(self) -> dict:
        """The run's config as the manifest recorded it, with today's schema defaults for keys it predates."""
        config = self.manifest["config"]
        return with_defaults(json.loads(config) if isinstance(config, str) else config)

    def has(self, path: str) -> bool:
        """Whether the manifest lists ``path`` (a layout path)."""
        return self.layout.relative(path) in self.manifest["files"]

    def verified(self, path: str) -> Path:
        """A layout path of the run, after checking it against the manifest's checksum."""
        return verified_path(self.root, self.manifest, self.layout.relative(path))

    def scoring_models(self, backbone: str) -> dict[str, Path]:
        """The checked model files that score a patient no model trained on: the `all` model and,
        with `train.ensemble: folds`, the fold models beside it (as the workflow scored its test
        patients, lus_core.cnn.infer); `all` first."""
        folds = range(int(self.config["split"]["n_folds"])) if ensemble_of(self.config) else []
        return {name: self.verified(self.layout.model(backbone, name)) for name in ["all", *map(str, folds)]}

    def verified_stores(self, stores) -> dict[str, str]:
        """Each frame-store path of the frame index -> its checked file in this run, whatever the
        configuration, so that predictions are never made with a run whose frames changed."""
        out = {}
        for h5 in sorted(set(map(str, stores))):
            try:
                out[h5] = str(self.verified(self.layout.store(Path(h5).stem)))
            except RunError as exc:
                raise RunError(f"frame store {exc}") from exc
        return out
