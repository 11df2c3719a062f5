"""Config errors name the YAML file (or --config) that set the key; the split is checked at DAG time."""

import pytest

from lus_core.config import ConfigError, ConfigSources, validate_config
from lus_core.workflow.dag import check_split_feasible
from tests.workflow_helpers import REPO, snakemake


def test_errors_name_the_file_that_set_the_key(tmp_path):
    base, extra = tmp_path / "base.yaml", tmp_path / "extra.yaml"
    base.write_text("train: {epochs: 2}\nsplit: {k_test: 2}\n")
    extra.write_text("train: {epochs: ten}\nsplit: {k_tset: 1}\n")
    sources = ConfigSources.from_snakemake([extra, base], [extra], {"seed": "x"})
    config = {"train": {"epochs": "ten"}, "split": {"k_test": 2, "k_tset": 1}, "seed": "x"}
    with pytest.raises(ConfigError) as err:
        validate_config(config, source=sources)
    message = str(err.value)
    assert f"{extra}: key 'train.epochs'" in message
    assert f"{extra}: unknown key 'k_tset'" in message
    assert "--config: key 'seed'" in message
    assert sources.where("split.k_test") == str(base)


def _videos(n_patients, unlabelled=0):
    videos = {f"p{i}_v": {"patient": f"p{i}", "ranges": [(0, None, i % 4)], "path": ""} for i in range(n_patients)}
    videos |= {f"u{i}_v": {"patient": f"u{i}", "ranges": [], "path": ""} for i in range(unlabelled)}
    return videos


@pytest.mark.parametrize("split, message", [
    ({"k_test": 5}, "split.k_test' = 5 test patients, but only 5 patient"),  # unlabelled patients do not count
    ({"k_test": 2, "n_folds": 4}, "split.n_folds' = 4 folds need at least 4 training patients"),
    ({"k_test": 2, "force_test": ["nobody"]}, "names patient(s) ['nobody']"),
])
def test_impossible_split_is_refused(split, message):
    config = validate_config({"split": split, "dataset": {"synthetic": {"enabled": True}}})
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        check_split_feasible(config, _videos(5, unlabelled=3))
    fine = {"split": {"k_test": 2, "n_folds": 3}, "dataset": {"synthetic": {"enabled": True}}}
    check_split_feasible(validate_config(fine), _videos(5, unlabelled=3))


def test_k_test_too_large_stops_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("split: {k_test: 6}\n")
    results = tmp_path / "results"
    proc = snakemake("--configfile", "configs/tiny.yaml", str(bad), "--config", f"results={results}",
                     "--cores", "1", workdir=tmp_path / "wd", timeout=300)
    assert proc.returncode != 0
    assert f"{bad}: key 'split.k_test' = 6 test patients, but only 6 patient(s)" in proc.stderr
    assert not results.exists()  # nothing was generated or extracted
    assert (REPO / "configs" / "tiny.yaml").exists()


def test_a_class_without_any_labelled_video_is_refused():
    config = validate_config({"split": {"k_test": 1, "n_folds": 2}, "dataset": {"synthetic": {"enabled": True}}})
    videos = _videos(3, unlabelled=2)  # scores 0, 1, 2: no labelled video of class 3
    with pytest.raises(ConfigError, match=r"key 'classes' lists \[3\], but no labelled video"):
        check_split_feasible(config, videos)
    check_split_feasible(config, _videos(4))
