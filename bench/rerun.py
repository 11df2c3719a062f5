"""Wall time of a no-op rerun of the default workflow and of its dry run (goal: no-op <= 3 s on
2 cores). The reference in the same run is the bare start-up of `snakemake --version`, so the
figures can be read against what Snakemake itself costs on this machine."""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lus_core.runs.bench_records import record

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
GOAL_S = 3.0


def timed(args, cwd=REPO) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run([SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return time.perf_counter() - t, proc.stdout + proc.stderr


def main():
    with tempfile.TemporaryDirectory() as tmp:
        args = []
        # the default run when it is complete and current, else a tiny run made here
        if "Nothing to be done" not in timed(["-n"])[1]:
            args = ["--configfile", "configs/tiny.yaml", "--config", f"results={tmp}/tiny"]
            timed(["--cores", "2", "--quiet", *args])  # produce a finished run first
        startup = min(timed(["--version"])[0] for _ in range(3))
        dry, out = min(timed(["-n", *args]) for _ in range(3))
        noop, out2 = min(timed(["--cores", "2", *args]) for _ in range(3))
    assert "Nothing to be done" in out and "Nothing to be done" in out2, "the run was not complete"
    print(f"snakemake start-up {startup:.2f} s, dry run {dry:.2f} s, no-op rerun {noop:.2f} s")
    record({"bench": "rerun", "config": "tiny" if args else "default", "noop_rerun_s": round(noop, 2),
                      "dry_run_s": round(dry, 2), "snakemake_startup_s": round(startup, 2),
                      "goal_noop_rerun_s": GOAL_S, "met": bool(noop <= GOAL_S)})


if __name__ == "__main__":
    main()
