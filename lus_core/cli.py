"""The `lus` command line: `lus synth`, `lus run`, `lus predict`, `lus score`, `lus export`, `lus model-card`,
`lus summarize`, `lus bench-table`.

Exit status: 0 done; 2 an error (named on stderr, nothing written); 3 `lus predict` scored the
readable videos but some could not be scored (listed on stderr and in summary.json's `failed`).
Subcommands import what they need when they run (`lus --help` starts without torch)."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from lus_core.config import ConfigError, load_config, validate_config

REPO = Path(__file__).resolve().parent.parent
MODEL_CARD = "lus model-card"  # the tool its pages name (lus_core.runs.page_output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lus", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic LUS dataset (videos + labels.csv)")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--config", type=Path, default=None,
                   help="takes dataset.synthetic, classes, seed (default: the clone's config.yaml, or "
                        "the schema's defaults when lus_core is installed from a wheel)")
    p.add_argument("--patients", type=int, help="override dataset.synthetic.n_patients")
    p.add_argument("--seed", type=int, help="override seed")

    p = sub.add_parser("run", help="run the workflow (snakemake) with a config")
    p.add_argument("--config", type=Path, default=REPO / "config.yaml")
    p.add_argument("--cores", default="all")
    p.add_argument("snakemake_args", nargs=argparse.REMAINDER,
                   help="passed on to snakemake, options included (lus run --config C -n, --unlock, --forcerun evaluate)")

    p = sub.add_parser("predict", help="score new videos with a finished run")
    p.add_argument("videos", nargs="+", type=Path, help="video files or folders of videos / frames")
    p.add_argument("--run", required=True, type=Path, help="results folder of a finished workflow run")
    p.add_argument("--config-name", default="selected",
                   help="'selected' (chosen on training patients, eval/summary.json) or a configuration name")
    p.add_argument("--out", type=Path, default=Path("predictions_out"),
                   help="output folder: new or empty (never among the input videos)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the files an earlier `lus predict` wrote in --out (nothing else there is touched)")
    p.add_argument("--device", default="auto", type=_device, help="auto (a GPU where there is one), cpu, cuda, cuda:N or mps")
    p.add_argument("--gradcam", action="store_true",
                   help="also write where the CNN looked (Grad-CAM) for each untrusted frame: galleries/*_gradcam.png")
    p.add_argument("--no-galleries", dest="galleries", action="store_false", help="skip the gallery PNGs")
    p.add_argument("--max-gallery-rows", type=int, default=10, metavar="N",
                   help="untrusted frames drawn per video gallery, least confident first (default 10)")
    p.add_argument("--on-bad-video", choices=["skip", "error"], default="skip",
                   help="skip (default): score every readable video, list the others in summary.json "
                        "(failed) and exit with status 3; error: stop at the first and write nothing")
    p.add_argument("--min-decoded-fraction", type=float, metavar="F",
                   help="accept a video when at least this fraction of the frames its container declares "
                        "decodes (default: the run's dataset.min_decoded_fraction); summary.json records "
                        "each video's fraction")

    p = sub.add_parser("score", help="score a `lus predict` output against labels (external validation)")
    p.add_argument("predictions", type=Path, metavar="PRED_DIR", help="the --out folder of `lus predict`")
    p.add_argument("--labels", required=True, type=Path, help="CSV with one row per video: the video (its id, file name, stem or path) and score")
    p.add_argument("--video-col", default="video", help="the labels' video id column (default video)")
    p.add_argument("--score-col", default="score", help="the labels' score column, class names of the run (default score)")
    patient = p.add_mutually_exclusive_group()
    patient.add_argument("--patient-col", help="the labels' patient column")
    patient.add_argument("--patient-regex", metavar="REGEX",
                         help="the patient is the first group of REGEX on the video id, e.g. 'patient_(\\d+)_' "
                         "(default, without --patient-col: each video is its own patient)")
    p.add_argument("--out", type=Path, help="output folder (default PRED_DIR/score): new, empty or an earlier "
                   "`lus score` output (only its files are replaced)")
    p.add_argument("--n-bootstrap", type=int, default=1000, metavar="N", help="patient resamples (default 1000)")
    p.add_argument("--ci", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="seed of the patient resamples (default 0)")

    p = sub.add_parser("export", help="export a finished run's deployed scorer as ONNX with its model card")
    p.add_argument("--run", required=True, type=Path, help="results folder of a finished workflow run")
    p.add_argument("--out", required=True, type=Path, help="output folder: new or empty")
    p.add_argument("--config-name", default="selected",
                   help="'selected' (chosen on training patients, eval/summary.json) or a configuration name")
    p.add_argument("--overwrite", action="store_true", help="replace the files an earlier export wrote in --out")

    p = sub.add_parser("model-card", help="write a finished run's model card (Markdown)")
    p.add_argument("--run", required=True, type=Path, help="results folder of a finished workflow run")
    p.add_argument("--out", required=True, type=Path, help="the Markdown file to write (outside the run folder)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out even where it is not a model card that lus model-card wrote")

    p = sub.add_parser("summarize", help="write a finished run's results as a Markdown page or README block")
    p.add_argument("run", type=Path, help="results folder of a finished workflow run")
    p.add_argument("--out", type=Path, help="write a whole Markdown page here (outside the run folders), its figures "
                   "in the folder STEM-figures beside it")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out and its figures even where they are not a page that lus summarize wrote")
    p.add_argument("--readme", type=Path, help="rewrite the default-run block between its markers in this file")
    p.add_argument("--images", type=Path, help="with --readme: also copy the run's README figures into this folder")
    p.add_argument("--title", default="Results")
    p.add_argument("--command", dest="run_command", default="snakemake --cores all", help="the command that produced the run")
    p.add_argument("--preamble", type=Path, help="Markdown file placed before the results")
    p.add_argument("--epilogue", type=Path, help="Markdown file placed after the results")
    p.add_argument("--recipes", type=Path, nargs="+", metavar="RUN",
                   help="with --out: compare the recipes (backbones) of this run and of these finished runs on the same split; nested runs: their whole procedures, pooled over the same outer folds")
    p.add_argument("--reference-recipe", help="the recipe ('backbone @ run-folder-name') the others are paired against; "
                   "default the run's first backbone")
    p.add_argument("--pair", nargs=2, action="append", default=[], metavar=("RECIPE", "OTHER"),
                   help="with --recipes: also give the paired test video QWK difference RECIPE - OTHER "
                   "(e.g. with and without one change); repeatable")

    p = sub.add_parser("bench-table", help="print the benchmark table from bench/results (or rewrite the README's)")
    p.add_argument("--results", type=Path, default=None, help="folder of benchmark records (default: the clone's bench/results)")
    p.add_argument("--readme", type=Path, help="rewrite the benchmarks block between its markers in this file")

    args, unknown = parser.parse_known_args(argv)
    if args.command == "run":
        # snakemake's own options, wherever they stand (argparse's remainder takes none before a target)
        args.snakemake_args = [*unknown, *args.snakemake_args]
        if args.snakemake_args[:1] == ["--"]:
            args.snakemake_args = args.snakemake_args[1:]
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        commands = {"synth": _synth, "run": _run, "predict": _predict, "score": _score, "export": _export,
                    "model-card": _model_card, "summarize": _summarize, "bench-table": _bench_table}
        return commands[args.command](args)
    except (ConfigError, ValueError, OSError) as exc:  # FileNotFoundError, IsADirectoryError, ... are OSErrors
        print(f"lus {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lus {args.command}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT


def _device(value: str) -> str:
    """A torch device name, checked before any work (torch's own error was a traceback)."""
    if not (value in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", value)):
        raise argparse.ArgumentTypeError(f"{value!r} is not a device: auto, cpu, cuda, cuda:N or mps")
    if value not in ("auto", "cpu"):
        import torch

        there = torch.backends.mps.is_available() if value == "mps" else (
            torch.cuda.is_available() and int(value.partition(":")[2] or 0) < torch.cuda.device_count())
        if not there:
            raise argparse.ArgumentTypeError(f"{value}: no such device on this machine; use auto or cpu")
    return value


def _synth(args) -> int:
    from lus_core.synth.dataset import generate_dataset

    config = load_config(args.config) if args.config else _default_config()
    synth = dict(config["dataset"]["synthetic"])
    if args.patients:
        synth["n_patients"] = args.patients
    seed = config["seed"] if args.seed is None else args.seed
    labels = generate_dataset(args.out_dir, synth, config["classes"], seed)
    print(f"wrote {labels} and {labels.parent / 'videos'}")
    return 0


def _default_config() -> dict:
    """The clone's config.yaml; an installed wheel has none, so the schema's defaults."""
    clone = REPO / "config.yaml"
    return load_config(clone) if clone.exists() else validate_config(
        {"dataset": {"synthetic": {"enabled": True}}}, source="config_schema.yaml defaults")


def _run(args) -> int:
    load_config(args.config)  # fail fast with the schema's message
    snakemake = Path(sys.executable).with_name("snakemake")
    # --rerun-incomplete: an interrupted run's unfinished jobs run again (every step writes its
    # outputs atomically, so an incomplete mark means "not done", never "half-written and kept")
    cmd = [str(snakemake), "--snakefile", str(REPO / "Snakefile"), "--configfile", str(args.config),
           "--cores", str(args.cores), "--rerun-incomplete", *args.snakemake_args]
    return run_until_stopped(cmd)


def run_until_stopped(cmd: list[str]) -> int:
    """Run `cmd`, passing a Ctrl-C or SIGTERM on to it and waiting while it stops: Snakemake then
    ends its jobs, marks their outputs incomplete and releases its lock (subprocess.call killed it
    at once, leaving the folder locked). In its own process group, so a signal reaches it once."""
    child = subprocess.Popen(cmd, env=os.environ.copy(), process_group=0)
    forward = lambda signum, _frame: child.send_signal(signum)  # noqa: E731
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 128 - code if code < 0 else code


def _predict(args) -> int:
    from lus_core.runs.predict import EXIT_SOME_FAILED, run_predict

    result = run_predict(args.videos, args.run, args.config_name, args.out, device=args.device,
                         overwrite=args.overwrite, gradcam=args.gradcam, galleries=args.galleries,
                         max_gallery_rows=args.max_gallery_rows, on_bad_video=args.on_bad_video,
                         min_decoded_fraction=args.min_decoded_fraction)
    return EXIT_SOME_FAILED if result.failed else 0


def _score(args) -> int:
    from lus_core.runs.score import run_score

    run_score(args.predictions, args.labels, video_col=args.video_col, score_col=args.score_col,
              patient_col=args.patient_col, patient_regex=args.patient_regex, out_dir=args.out,
              n_bootstrap=args.n_bootstrap, ci=args.ci, seed=args.seed)
    return 0


def _export(args) -> int:
    from lus_core.runs.export import run_export

    out = run_export(args.run, args.out, args.config_name, args.overwrite)
    print(f"wrote {out}/model.onnx, export.json, predict_onnx.py and model_card.md")
    return 0


def _model_card(args) -> int:
    from lus_core.runs.model_card import model_card_text
    from lus_core.runs.page_output import check_page_out, write_page
    from lus_core.runs.reader import FinishedRun

    run = FinishedRun(args.run)
    check_page_out(args.out, MODEL_CARD, args.overwrite, [run.root])
    write_page(args.out, MODEL_CARD, lambda _: model_card_text(run))
    print(f"wrote {args.out}")
    return 0


def _summarize(args) -> int:
    from lus_core.runs.markdown import copy_figures, write_readme_block, write_results_markdown

    if not args.out and not args.readme:
        raise ValueError("give --out (a Markdown page) and/or --readme (the README's default-run block)")
    if args.out:
        text = {k: getattr(args, k).read_text() if getattr(args, k) else "" for k in ("preamble", "epilogue")}
        if args.pair and not args.recipes:
            raise ValueError("--pair compares recipes: give --recipes too")
        recipes = ({"recipes": args.recipes, "reference_recipe": args.reference_recipe,
                    "pairs": [tuple(p) for p in args.pair]} if args.recipes else {})
        print(f"wrote {write_results_markdown(args.run, args.out, args.title, args.run_command, **text, overwrite=args.overwrite, **recipes)}")
    if args.readme:
        print(f"rewrote the default-run block of {write_readme_block(args.run, args.readme)}")
        for f in copy_figures(args.run, args.images) if args.images else []:
            print(f"wrote {f}")
    return 0


def _bench_table(args) -> int:
    from lus_core.runs.bench_records import RESULTS, bench_table, read_results, write_bench_block

    folder = args.results or RESULTS
    if args.readme:
        print(f"rewrote the benchmarks block of {write_bench_block(args.readme, folder)}")
    else:
        print(bench_table(read_results(folder)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
