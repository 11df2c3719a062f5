"""Peak memory of extracting one 1920x1080, 300-frame video with max_frames_per_video: 8,
against the interpreter's baseline and the bytes of the frames kept (issue 14 item 7).

Decoding must follow what is kept: goal peak <= 100 MB above the baseline (the whole video
decoded would be 622 MB of grayscale pixels). The extraction runs in a fresh interpreter; the
peak is measured twice: numpy/OpenCV arrays (tracemalloc) and the process's resident memory
(peak RSS, reset after the imports), which also counts the decoder's own buffers.
"""

import json
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

import cv2
import numpy as np

from lus_core.runs.bench_records import record

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WIDTH, HEIGHT, N_FRAMES, MAX_FRAMES = 1920, 1080, 300, 8
GOAL_MB = 100.0
MB = 1 << 20


def write_video(path: Path) -> None:
    """A gray fan of speckle on black, moving a little each frame (mp4v)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    r, angle = np.hypot(xx - WIDTH / 2, yy + 50), np.arctan2(xx - WIDTH / 2, yy + 50)
    fan = (np.abs(angle) < 0.7) & (r > 100) & (r < HEIGHT - 20)
    speckle = rng.normal(0, 25, (HEIGHT, WIDTH)).astype(np.float32)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (WIDTH, HEIGHT))
    for t in range(N_FRAMES):
        img = np.where(fan, 100 + 50 * np.sin(r / 30 + t / 5) + np.roll(speckle, 7 * t, axis=1), 0)
        writer.write(cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR))
    writer.release()


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(video: str, out: str) -> None:
    """In a fresh interpreter: import everything, take the baseline, extract, report peaks."""
    import h5py

    from lus_core.config import validate_config
    from lus_core.frames.extract import extract_video
    from lus_core.frames.labels import VideoEntry

    cfg = validate_config({"dataset": {"video_dirs": [str(Path(video).parent)], "labels": "unused.csv"},
                           "frames": {"max_frames_per_video": MAX_FRAMES}})
    entry = VideoEntry("patient_A_1", video, "A", [(0, None, 1)])
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS to the current RSS
    baseline = _rss_mb("VmRSS")
    tracemalloc.start()
    n_stored = extract_video(entry, out, cfg)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = _rss_mb("VmHWM")
    with h5py.File(out, "r") as f:
        stored = f["frames"][:]
    print(json.dumps({"baseline_rss_mb": baseline, "peak_rss_mb": peak, "traced_peak_mb": traced_peak / MB,
                      "n_stored": n_stored, "stored_mb": stored.nbytes / MB}))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "patient_A_1.mp4"
        write_video(video)
        proc = subprocess.run([sys.executable, __file__, "--child", str(video), str(Path(tmp) / "out.h5")],
                              capture_output=True, text=True, check=True)
        child_figures = json.loads(proc.stdout.strip().splitlines()[-1])
    kept_mb = MAX_FRAMES * WIDTH * HEIGHT / MB  # the kept frames at full size, one channel
    rss_above = child_figures["peak_rss_mb"] - child_figures["baseline_rss_mb"]
    traced = child_figures["traced_peak_mb"]
    print(f"{WIDTH}x{HEIGHT}, {N_FRAMES} frames (whole video {N_FRAMES * WIDTH * HEIGHT / MB:.0f} MB gray), "
          f"max_frames_per_video {MAX_FRAMES}: kept frames {kept_mb:.1f} MB at full size, "
          f"{child_figures['stored_mb']:.2f} MB stored")
    print(f"peak above baseline: {rss_above:.1f} MB RSS, {traced:.1f} MB numpy/OpenCV arrays (tracemalloc); "
          f"baseline RSS {child_figures['baseline_rss_mb']:.0f} MB")
    met = rss_above <= GOAL_MB and traced <= GOAL_MB
    record({"bench": "decode_memory", "video": f"{WIDTH}x{HEIGHT}x{N_FRAMES} mp4v",
                      "max_frames_per_video": MAX_FRAMES, "n_stored": child_figures["n_stored"],
                      "kept_frames_full_size_mb": round(kept_mb, 1), "stored_mb": round(child_figures["stored_mb"], 2),
                      "baseline_rss_mb": round(child_figures["baseline_rss_mb"], 1),
                      "peak_rss_above_baseline_mb": round(rss_above, 1), "traced_peak_mb": round(traced, 1),
                      "goal_peak_above_baseline_mb": GOAL_MB, "met": bool(met)})


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(*sys.argv[2:4])
    else:
        main()
