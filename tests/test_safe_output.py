"""`lus predict`'s output folder: a user's files survive, inputs are never an output folder, and a
stopped process (an error, Ctrl-C, SIGTERM) leaves no staging folder."""

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from lus_core.runs.safe_output import (
    OWN_MANIFEST,
    OutputError,
    check_output_dir,
    publish,
    staged,
    staging_dir,
)

REPO = Path(__file__).resolve().parents[1]


def _stage(out, files):
    staging = staging_dir(out)
    for rel, text in files.items():
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_text(text)
    return staging


def _user_folder(tmp_path):
    out = tmp_path / "out"
    (out / "mine").mkdir(parents=True)
    (out / "notes.txt").write_text("my notes")
    (out / "mine" / "draft.md").write_text("draft")
    return out


def test_non_empty_out_is_refused_without_overwrite(tmp_path):
    out = _user_folder(tmp_path)
    with pytest.raises(OutputError, match="not empty.*--overwrite"):
        check_output_dir(out, [tmp_path / "videos" / "v.mp4"], overwrite=False)


def test_overwrite_replaces_only_our_own_files(tmp_path):
    out = tmp_path / "out"
    check_output_dir(out, [], overwrite=False)
    publish(_stage(out, {"frames.csv": "v1", "galleries/a.png": "a", "galleries/b.png": "b"}), out)
    (out / "notes.txt").write_text("my notes")
    (out / "mine").mkdir()
    (out / "mine" / "draft.md").write_text("draft")
    check_output_dir(out, [], overwrite=True)
    publish(_stage(out, {"frames.csv": "v2", "galleries/a.png": "a2"}), out)
    assert (out / "frames.csv").read_text() == "v2"
    assert not (out / "galleries" / "b.png").exists()  # ours, from the earlier run
    assert (out / "notes.txt").read_text() == "my notes" and (out / "mine" / "draft.md").read_text() == "draft"
    assert json.loads((out / OWN_MANIFEST).read_text())["files"] == ["frames.csv", "galleries/a.png"]
    assert not list(tmp_path.glob(".out.*"))  # no staging folder left


def test_a_folder_not_written_by_lus_predict_is_never_replaced(tmp_path):
    out = _user_folder(tmp_path)
    (out / "frames.csv").write_text("the user's own table")
    with pytest.raises(OutputError, match=OWN_MANIFEST):
        check_output_dir(out, [], overwrite=True)
    # even with our manifest present, a file it does not list is never replaced
    (out / OWN_MANIFEST).write_text(json.dumps({"files": ["summary.json"]}))
    with pytest.raises(OutputError, match="did not write.*frames.csv"):
        publish(_stage(out, {"frames.csv": "new"}), out)
    assert (out / "frames.csv").read_text() == "the user's own table"


@pytest.mark.parametrize("where", ["same", "inside", "contains", "video_folder", "symlink"])
def test_out_touching_an_input_is_refused(tmp_path, where):
    videos = tmp_path / "data" / "videos"
    videos.mkdir(parents=True)
    (videos / "v.mp4").write_bytes(b"video")
    inputs = [videos]
    out = {"same": videos, "inside": videos / "pred", "contains": tmp_path / "data",
           "video_folder": videos, "symlink": tmp_path / "link"}[where]
    if where == "video_folder":
        inputs = [videos / "v.mp4"]
    if where == "symlink":
        (tmp_path / "link").symlink_to(videos)
    with pytest.raises(OutputError, match="input"):
        check_output_dir(out, inputs, overwrite=True)
    assert (videos / "v.mp4").read_bytes() == b"video"
    if where == "video_folder":  # a new sub-folder beside a video file given alone is fine
        check_output_dir(videos / "pred", inputs, overwrite=False)


# a process that stages a file, says where, and waits to be stopped
STAGING_SCRIPT = """
import sys, time
from lus_core.runs.safe_output import staged
with staged(sys.argv[1]) as staging:
    (staging / "frames.csv").write_text("half written")
    print(staging, flush=True)
    time.sleep(60)
"""


def test_sigterm_while_staging_leaves_no_partial_folder(tmp_path):
    """`timeout`, `kill` and SLURM stop a process with SIGTERM: the staging folder goes as on an error."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", STAGING_SCRIPT, str(out)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    try:
        staged_at = proc.stdout.readline().strip()
        assert staged_at and Path(staged_at).is_dir(), "the process did not stage"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert not Path(staged_at).exists() and not list(tmp_path.glob(".out.*")) and not out.exists()
    assert proc.returncode == 128 + signal.SIGTERM


def test_staging_puts_the_sigterm_handler_back(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with staged(tmp_path / "out") as staging:
        assert signal.getsignal(signal.SIGTERM) != before
    assert signal.getsignal(signal.SIGTERM) == before and not staging.exists()
    # only the main thread may handle signals: elsewhere staging works without one
    errors = []

    def stage():
        try:
            with staged(tmp_path / "threaded") as folder:
                (folder / "frames.csv").write_text("done")
        except Exception as exc:  # whatever it was: the assertion below shows it
            errors.append(exc)

    thread = threading.Thread(target=stage)
    thread.start()
    thread.join()
    assert not errors and not list(tmp_path.glob(".threaded.*"))
