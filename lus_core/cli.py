"""The `lus` command line: `lus synth`, `lus run`, `lus predict`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from lus_core.config import ConfigError, load_config

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lus", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic LUS dataset (videos + labels.csv)")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--config", type=Path, default=REPO / "config.yaml", help="takes dataset.synthetic, classes, seed")
    p.add_argument("--patients", type=int, help="override dataset.synthetic.n_patients")
    p.add_argument("--seed", type=int, help="override seed")

    p = sub.add_parser("run", help="run the workflow (snakemake) with a config")
    p.add_argument("--config", type=Path, default=REPO / "config.yaml")
    p.add_argument("--cores", default="all")
    p.add_argument("snakemake_args", nargs=argparse.REMAINDER, help="passed on to snakemake")

    p = sub.add_parser("predict", help="score new videos with a finished run")
    p.add_argument("videos", nargs="+", type=Path, help="video files or folders of videos / frames")
    p.add_argument("--run", required=True, type=Path, help="results folder of a finished workflow run")
    p.add_argument("--config-name", default="best", help="'best' (from eval/summary.json) or a configuration name")
    p.add_argument("--out", type=Path, default=Path("predictions_out"))
    p.add_argument("--device", default="auto")
    p.add_argument("--no-galleries", dest="galleries", action="store_false", help="skip the gallery PNGs")
    p.add_argument("--max-gallery-rows", type=int, default=10, metavar="N",
                   help="untrusted frames drawn per video gallery, least confident first (default 10)")

    p = sub.add_parser("summarize", help="write a finished run's results as a Markdown page")
    p.add_argument("run", type=Path, help="results folder of a finished workflow run")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--title", default="Results")
    p.add_argument("--command", dest="run_command", default="snakemake --cores all", help="the command that produced the run")
    p.add_argument("--preamble", type=Path, help="Markdown file placed before the results")
    p.add_argument("--epilogue", type=Path, help="Markdown file placed after the results")

    args = parser.parse_args(argv)
    try:
        commands = {"synth": _synth, "run": _run, "predict": _predict, "summarize": _summarize}
        return commands[args.command](args)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"lus {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _synth(args) -> int:
    from lus_core.synth import generate_dataset

    config = load_config(args.config)
    synth = dict(config["dataset"]["synthetic"])
    if args.patients:
        synth["n_patients"] = args.patients
    seed = config["seed"] if args.seed is None else args.seed
    labels = generate_dataset(args.out_dir, synth, config["classes"], seed)
    print(f"wrote {labels} and {labels.parent / 'videos'}")
    return 0


def _run(args) -> int:
    load_config(args.config)  # fail fast with the schema's message
    snakemake = Path(sys.executable).with_name("snakemake")
    cmd = [str(snakemake), "--snakefile", str(REPO / "Snakefile"), "--configfile", str(args.config),
           "--cores", str(args.cores), *args.snakemake_args]
    return subprocess.call(cmd, env=os.environ.copy())


def _predict(args) -> int:
    from lus_core.predict import run_predict

    run_predict(args.videos, args.run, args.config_name, args.out, device=args.device,
                galleries=args.galleries, max_gallery_rows=args.max_gallery_rows)
    return 0


def _summarize(args) -> int:
    from lus_core.summarize import write_results_markdown

    text = {k: getattr(args, k).read_text() if getattr(args, k) else "" for k in ("preamble", "epilogue")}
    out = write_results_markdown(args.run, args.out, args.title, args.run_command, **text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
