"""The benchmarks' records and the README table made from them: the one reader and writer of
`bench/results/{bench}.json`.

Each `bench/NAME.py` ends with :func:`record`, which prints its figures as one JSON line (the
last line of its output) and keeps them, with when, where and how it was run, in
`bench/results/NAME.json`. The README's benchmark table is written from those files by
``lus bench-table --readme README.md`` (between ``<!-- BEGIN benchmarks -->`` and
``<!-- END benchmarks -->``), never by hand; a test checks that the README matches them.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from lus_core.io_utils import atomic_path
from lus_core.runs.readme_blocks import rewrite_blocks

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
BLOCK = "benchmarks"


def record(result: dict, folder: str | Path = RESULTS, argv: list[str] | None = None) -> Path:
    """Print ``result`` as the last JSON line and keep it in ``folder/{bench}.json``."""
    print(json.dumps(result))
    kept = {**result, "measured_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "platform": platform.machine(), "python": platform.python_version()},
            "argv": list(sys.argv[1:] if argv is None else argv)}
    path = Path(folder) / f"{result['bench']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(kept, indent=1, sort_keys=True) + "\n")
    return path


def read_results(folder: str | Path = RESULTS) -> dict[str, dict]:
    """{bench: its last record}."""
    out = {}
    for path in sorted(Path(folder).glob("*.json")):
        try:
            result = json.loads(path.read_text())
        except ValueError as e:
            raise ValueError(f"{path}: not a benchmark record ({e})") from e
        out[result.get("bench", path.stem)] = result
    return out


def _g(x, fmt: str = "{:g}") -> str:
    return "—" if x is None else fmt.format(x)


def _predict(r: dict) -> str:
    return (f"{r['configuration']} ({'selected by the run' if r.get('selected') else 'not the selected one'}), "
            f"{r['videos']} videos, {r['untrusted_frames']} untrusted frames, {r['galleries']} galleries: "
            f"ratio {r['ratio_with_galleries']:.2f} with galleries ({r['seconds_per_video']:.2f} s per video against "
            f"{r['seconds_per_video_plain']:.2f}), {r['ratio_without_galleries']:.2f} without")


def _extract(r: dict) -> str:
    median = f", median of runs {r['ratio_median_of_runs']:.2f}" if "ratio_median_of_runs" in r else ""
    return (f"{r['data']}, {r['frames']} frames: {r['ratio_vs_plain_decode']:.2f} of plain decoding as one job "
            f"extracts them ({r['extract_fps']:.0f} vs {r['plain_decode_fps']:.0f} fps{median}; one video at a time "
            f"{r['ratio_one_by_one']:.2f}); store reader {r['read_ratio_vs_gzip_format']:.2f}x the gzip store's speed, "
            f"{r['store_mb']:.1f} MB vs {r['store_mb_gzip_format']:.1f} MB")


def _similarity(r: dict) -> str:
    out = []
    if "p50_ms" in r:
        out.append(f"{r['n']:,} x {r['dim']}: annoy p50 {r['p50_ms']:.2f} ms, recall@10 {r['recall_at_10']:.3f}")
    out.append(f"{r['archive_n']:,} x {r['archive_dim']}: p50 {r['archive_p50_ms']:.2f} ms, recall@10 "
               f"{r['archive_recall_at_10']:.3f}, build {r['archive_build_s']:.0f} s, peak "
               f"{r['archive_build_peak_rss_mb']:.0f} MB, index {r['archive_index_mb']:.0f} MB")
    if "speedup_vs_refit" in r:
        out.append(f"a new frame placed on a fixed t-SNE map {r['speedup_vs_refit']:,.0f}x faster than refitting "
                   f"per query ({r['ours_s_per_query'] * 1000:.1f} ms vs {r['tsne_refit_s_per_query']:.1f} s)")
    return "; ".join(out)


def _split(r: dict) -> str:
    return (f"{r['speedup_vs_itertools']:,.0f}x faster (branch and bound {r['speedup_vs_itertools_bnb']:,.0f}x); "
            f"C(63,8) in {r['c63_8_seconds']:.2f} s")


def _heads(r: dict) -> str:
    return (f"head training from the embedding cache {r['head_training_speedup']:.0f}x faster, max softmax "
            f"difference {r['max_abs_softmax_difference']:.1g}; {r['speedup_with_one_off_encoding']:.1f}x with the "
            f"one-off encoding counted")


def _blocks(r: dict) -> str:
    return (f"an epoch of the last {r['last_blocks']} blocks of {r['backbone']} ({r['image_size']} px) on cached "
            f"activations {r['epoch_speedup']:.1f}x faster, max softmax difference {r['max_abs_softmax_difference']:.1g}; "
            f"{r['speedup_with_one_off_encoding']:.1f}x with the one-off encoding counted ({r['epochs']} epochs)")


def _gpu(r: dict) -> str:
    if r.get("skipped"):
        return f"not measured: {r['skipped']}"
    return f"{r['img_per_s']:,.0f} img/s on {r['device']}"


def _export(r: dict) -> str:
    parts = [f"{b} {v['image_size']} px: one frame {v['batch1_onnx_ms_per_frame']:.2f} ms vs "
             f"{v['batch1_torch_ms_per_frame']:.2f} ms ({v['batch1_ratio']:.1f}x), batches of 64 "
             f"{v['batch64_onnx_ms_per_frame']:.2f} vs {v['batch64_torch_ms_per_frame']:.2f} ms a frame "
             f"({v['batch64_ratio']:.1f}x)" for b, v in r["backbones"].items()]
    return "; ".join(parts) + f"; max softmax difference {r['max_abs_softmax_difference']:.1g}"


def _run_time(r: dict) -> str:
    runs = r.get("runs") or {}
    parts = [f"{name}: full run {v['full_run_wall_seconds'] / 60:.1f} min on {v['full_run_cores']} cores, "
             f"{v['jobs']} jobs, {v['job_seconds']:.0f} job-s" if v.get("full_run_wall_seconds") else
             f"{name}: no full run on record" for name, v in runs.items()]
    return "; ".join(parts) or "no run on record"


# bench -> (reference in the same run, figures, goal)
ROWS: dict[str, tuple[str, Callable[[dict], str], Callable[[dict], str]]] = {
    "split": ("itertools brute force, n = 24, k = 8", _split,
              lambda r: f">= {_g(r['goal_speedup'])}x; C(63,8) <= {_g(r['goal_c63_8_seconds'])} s"),
    "similarity": ("exact numpy search of the same clustered vectors", _similarity,
                   lambda r: f"p50 <= {_g(r['goal_p50_ms'])} ms, recall@10 >= {_g(r['goal_recall'])}"),
    "loader": ("the same model fed from in-memory tensors",
               lambda r: f"{r['ratio_vs_in_memory']:.2f} of in-memory throughput ({r['backbone']}, "
                         f"{r['image_size']} px)", lambda r: f">= {_g(r['goal_ratio'])}"),
    "extract": ("plain OpenCV decoding of the same files", _extract, lambda r: f">= {_g(r['goal_ratio'])}"),
    "decode_memory": ("the interpreter's memory before extraction",
                      lambda r: f"{r['video']}, max_frames_per_video {r['max_frames_per_video']}: peak "
                                f"{r['peak_rss_above_baseline_mb']:.0f} MB above baseline",
                      lambda r: f"<= {_g(r['goal_peak_above_baseline_mb'])} MB"),
    "predict": ("model load + decode + CNN alone on the same videos", _predict, lambda r: f">= {_g(r['goal_ratio'])}"),
    "heads": ("the same head trained through the frozen encoder every epoch", _heads,
              lambda r: f">= {_g(r['goal_speedup'])}x, softmax within {_g(r['tolerance'])}"),
    "blocks": ("the same blocks trained through the whole network every epoch, early blocks frozen", _blocks,
               lambda r: f">= {_g(r['goal_speedup'])}x per epoch, softmax within {_g(r['tolerance'])}"),
    "rerun": ("`snakemake --version` start-up",
              lambda r: f"no-op rerun {r['noop_rerun_s']:.1f} s, of which {r['snakemake_startup_s']:.1f} s is "
                        f"Snakemake's own start-up", lambda r: f"<= {_g(r['goal_noop_rerun_s'])} s"),
    "export": ("the same model in torch (the workflow's inference), interleaved", _export,
               lambda r: f"onnxruntime >= {_g(r['goal_ratio'])}x torch's speed, softmax within {_g(r['tolerance'])}"),
    "run_time": ("—", _run_time, lambda r: f"<= {r['goal_wall_seconds'] / 60:g} min (default run)"),
    "gpu_train": ("—", _gpu, lambda r: f">= {_g(r.get('goal_img_per_s'), '{:,.0f}')} img/s"),
}


def bench_table(results: dict[str, dict]) -> str:
    """The README's benchmark table from the records (benches without a record are listed so)."""
    lines = ["| bench | reference in the same run | result | goal | met | measured |", "|---|---|---|---|---|---|"]
    for name, (reference, figures, goal) in ROWS.items():
        r = results.get(name)
        if r is None:
            lines.append(f"| `{name}.py` | {reference} | no record in bench/results | — | — | — |")
            continue
        met = {True: "yes", False: "no"}.get(r.get("met"), "—")  # None: not measured here
        when = f"{r.get('measured_utc', '?')[:10]}, {r.get('machine', {}).get('cpus', '?')} CPUs"
        args = " ".join(r.get("argv") or [])
        lines.append(f"| `{name}.py{' ' + args if args else ''}` | {reference} | {figures(r)} | {goal(r)} | {met} "
                     f"| {when} |")
    unknown = sorted(set(results) - set(ROWS))
    if unknown:
        raise ValueError(f"bench/results holds records no table row knows: {unknown}; add them to ROWS")
    return "\n".join(lines) + "\n"


def write_bench_block(readme: str | Path, folder: str | Path = RESULTS) -> Path:
    """Rewrite the README's benchmarks block from the records (atomically)."""
    return rewrite_blocks(readme, {BLOCK: bench_table(read_results(folder))})
