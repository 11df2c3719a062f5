"""Where every file of a results folder lives: the one place that spells out run-relative paths.

The rules (``rules/*.smk``) build their inputs and outputs from it (wildcards pass through:
``RunLayout(R).model("{backbone}", "{fold}")`` is a pattern), and ``lus predict``, ``lus
summarize`` and the manifest find a finished run's files with it, so a path changed here is
changed for the workflow and for every reader of its results at once. Pure string building:
no file is touched; the only lus_core import is the parser of scope names (lus_core.split.scopes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from lus_core.split.scopes import split_scope


@dataclass(frozen=True)
class RunLayout:
    """Paths of the results folder ``root`` (a string, as the rules use it)."""

    root: str

    def _p(self, *parts: str) -> str:
        return "/".join([str(self.root).rstrip("/"), *parts])

    def scoped(self, scope: str) -> RunLayout:
        """The layout of a scope's own files (lus_core.split.scopes): the root for the deployed
        scope, `outer/{o}/` for an outer fold, and `seed/{i}/` below either for seed i's replica
        (`outer{o}_seed{i}`, `seed{i}`). Frames, embeddings and the split stay at the root."""
        outer, seed = split_scope(scope)
        parts = [*(["outer", outer.removeprefix("outer")] if outer else []), *(["seed", str(seed)] if seed else [])]
        return RunLayout(self._p(*parts)) if parts else self

    def nested(self) -> str:
        """The pooled estimate of nested cross-validation over the outer folds."""
        return self._p("nested", "estimate.json")

    def nested_predictions(self) -> str:
        """Every patient's frames, scored by the outer fold that held them out."""
        return self._p("nested", "predictions.csv")

    def nested_videos(self) -> str:
        return self._p("nested", "videos.csv")

    def nested_figure(self) -> str:
        return self._p("nested", "folds.png")

    def selected_predictions(self) -> str:
        """The selected configuration's scores of a scope's test frames and videos (evaluate)."""
        return self._p("eval", "selected_predictions.csv")

    def relative(self, path: str) -> str:
        """``path`` relative to the results folder (the manifest's keys)."""
        return PurePosixPath(path).relative_to(PurePosixPath(str(self.root).rstrip("/"))).as_posix()

    # synthetic data
    def synthetic_dir(self) -> str:
        return self._p("synthetic")

    def synthetic_labels(self) -> str:
        return self._p("synthetic", "labels.csv")

    # frames
    def store(self, video: str) -> str:
        return self._p("frames", f"{video}.h5")

    def store_record(self, video: str) -> str:
        return self._p("frames", f"{video}.record.json")

    def stores_verified(self) -> str:
        return self._p("frames", "verified.json")

    def frame_index(self) -> str:
        return self._p("frame_index.csv")

    def frames_vds(self) -> str:
        return self._p("frames.h5")

    def skipped_videos(self) -> str:
        return self._p("skipped_videos.csv")

    # split
    def split(self) -> str:
        return self._p("split.json")

    # CNN
    def embedding(self, backbone: str, video: str) -> str:
        return self._p("embeddings", backbone, f"{video}.h5")

    def model(self, backbone: str, fold: str) -> str:
        return self._p("models", backbone, f"{fold}.pt")

    def model_metrics(self, backbone: str, fold: str) -> str:
        return self._p("models", backbone, f"{fold}.metrics.csv")

    def model_curve(self, backbone: str, fold: str) -> str:
        return self._p("models", backbone, f"{fold}.curve.png")

    def checkpoints(self, backbone: str, fold: str) -> str:
        """Resumable training state: outside the rule's outputs, which Snakemake deletes on failure."""
        return self._p("checkpoints", backbone, fold)

    def predictions(self, backbone: str) -> str:
        return self._p("predictions", f"{backbone}.h5")

    # confidence
    def confidence_model(self, backbone: str, method: str) -> str:
        return self._p("confidence", backbone, f"{method}.joblib")

    def confidence_scores(self, backbone: str, method: str) -> str:
        return self._p("confidence", backbone, f"{method}.csv")

    def confidence_summary(self, backbone: str, method: str) -> str:
        return self._p("confidence", backbone, f"{method}.json")

    def confidence_table(self, backbone: str) -> str:
        return self._p("confidence", backbone, "metrics.csv")

    def confidence_figure(self, backbone: str, name: str) -> str:
        return self._p("confidence", backbone, f"{name}.png")

    # similarity
    def index_files(self, backbone: str, space: str, tsne: bool | None = None) -> dict[str, str]:
        """The annoy index of a space and what travels with it (``tsne``: the fitted map; the
        t-SNE space's rule passes ``tsne=True`` with its ``{space}`` wildcard)."""
        base = self._p("index", backbone, space)
        files = {"ann": f"{base}.ann", "ids": f"{base}.ids.csv", "meta": f"{base}.json"}
        if space == "tsne" if tsne is None else tsne:
            files["tsne"] = f"{base}.tsne.pkl"
        return files

    def neighbors(self, backbone: str, space: str) -> str:
        return self._p("neighbors", backbone, f"{space}.h5")

    # video level
    def video_table(self, backbone: str) -> str:
        return self._p("video", f"{backbone}.csv")

    def video_model(self, backbone: str) -> str:
        return self._p("video", f"{backbone}.pt")

    # evaluation and report
    def matrix(self) -> str:
        return self._p("eval", "matrix.csv")

    def summary(self) -> str:
        return self._p("eval", "summary.json")

    def validation(self) -> str:
        """A seed replica's validation scores (several model seeds: lus_core.evaluation.seeds)."""
        return self._p("eval", "validation.json")

    def figures_dir(self) -> str:
        return self._p("eval", "figures")

    def gradcam_index(self) -> str:
        return self._p("gradcam", "index.json")

    def report(self) -> str:
        return self._p("report", "index.html")

    def model_card(self) -> str:
        return self._p("report", "model_card.md")

    def manifest(self) -> str:
        return self._p("manifest.json")

    # logs and benchmarks of the steps
    def log(self, *parts: str) -> str:
        return self._p("logs", *parts[:-1], f"{parts[-1]}.log")

    def benchmark(self, *parts: str) -> str:
        return self._p("benchmarks", *parts[:-1], f"{parts[-1]}.tsv")

    def benchmarks_dir(self) -> str:
        return self._p("benchmarks")

    def last_run(self) -> str:
        return self._p("logs", "last_run.json")

    def full_run(self) -> str:
        return self._p("logs", "full_run.json")
