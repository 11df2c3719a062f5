import copy
from pathlib import Path

import pytest
import yaml

from lus_core.config import ConfigError, load_config, validate_config


@pytest.fixture
def default_config():
    return yaml.safe_load(open("config.yaml"))


def test_default_config_is_valid_and_filled(default_config):
    cfg = validate_config(copy.deepcopy(default_config))
    assert cfg["classes"] == [0, 1, 2, 3]
    assert cfg["train"]["augment"]["p_hflip"] == 0.5
    assert cfg["dataset"]["label_columns"]["video"] == "video"


def test_every_schema_key_has_type_default_description():
    from lus_core.config import load_schema

    def walk(node, path):
        for name, sub in node.get("properties", {}).items():
            where = f"{path}.{name}".strip(".")
            assert "description" in sub, where
            assert "default" in sub, where
            assert "type" in sub or "enum" in sub, where
            walk(sub, where)

    walk(load_schema(), "")


@pytest.mark.parametrize(
    "patch, expected",
    [
        ({"train": {"epochs": "ten"}}, "train.epochs"),
        ({"train": {"backbones": ["resnet50"]}}, "train.backbones.0"),
        ({"trian": {}}, "unknown key 'trian'"),
        ({"split": {"k_tset": 3}}, "unknown key 'k_tset' under 'split'"),
        ({"classes": [0]}, "classes"),
        ({"similarity": {"metric": "cosine"}}, "similarity.metric"),
        ({"confidence": {"conformal_alpha": 1.5}}, "confidence.conformal_alpha"),
    ],
)
def test_bad_values_name_the_key(default_config, patch, expected):
    from lus_core.config import deep_merge

    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        validate_config(deep_merge(default_config, patch))


def test_real_dataset_needs_labels(default_config):
    cfg = copy.deepcopy(default_config)
    cfg["dataset"]["synthetic"]["enabled"] = False
    cfg["dataset"]["video_dirs"] = ["x"]
    with pytest.raises(ConfigError, match="dataset.labels"):
        validate_config(cfg)


def test_load_config_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)


@pytest.mark.parametrize("path", ["configs/covid-blues.yaml", "configs/pocus.yaml", "configs/pocus-diagnosis.yaml",
                                  "configs/full.yaml", "configs/tiny.yaml", "configs/dicom.yaml"])
def test_shipped_configs_are_valid(path):
    load_config(path)


def test_the_earlier_covid_blues_recipes_are_valid_laid_over_the_default():
    """configs/covid-blues-e2e.yaml is an overlay (`--configfile covid-blues.yaml it.yaml`)."""
    cfg = _laid_over_default("configs/covid-blues-e2e.yaml")
    assert cfg["train"]["backbones"] == ["resnet18", "efficientnet_lite0"] and cfg["train"]["loss"] == "ce"
    assert cfg["train"]["cache_views"] == 0 and cfg["train"]["image_size"] == 64
    assert cfg["results"] != _laid_over_default()["results"]  # never the same folder


def _laid_over(base: str, *overlays: str) -> dict:
    """config.yaml, then `base`, then `overlays`, as `--configfile` lays them."""
    from lus_core.config import deep_merge

    merged = {}
    for path in ("config.yaml", base, *overlays):
        merged = deep_merge(merged, yaml.safe_load(open(path)))
    return validate_config(merged)


def _laid_over_default(*overlays: str) -> dict:
    """configs/covid-blues.yaml with `overlays` laid over it."""
    return _laid_over("configs/covid-blues.yaml", *overlays)



@pytest.mark.parametrize("overlays, check", [
    (["configs/covid-blues-findings.yaml"],
     lambda c: c["dataset"]["findings"] == {"a_lines": "A-lines", "b_lines": "B-lines"}),
    (["configs/covid-blues-scratch.yaml"],
     lambda c: c["train"]["backbones"] == ["scratch"] and not c["dataset"]["findings"]),
    (["configs/covid-blues-scratch.yaml", "configs/covid-blues-scratch-findings.yaml"],
     lambda c: c["train"]["backbones"] == ["scratch"] and set(c["dataset"]["findings"]) == {"a_lines", "b_lines"}),
])
def test_the_findings_comparison_overlays_are_valid_and_write_their_own_folders(overlays, check):
    """Each overlay of the recipes comparison (docs/results-covid-blues.md) is valid laid over
    the default, and writes a results folder of its own."""
    cfg = _laid_over_default(*overlays)
    assert check(cfg)
    folders = {_laid_over_default(*overlays[:i])["results"] for i in range(len(overlays) + 1)}
    assert len(folders) == len(overlays) + 1  # never another recipe's folder


OVERLAYS = sorted(str(p) for base in ("covid-blues", "pocus-diagnosis")
                  for p in Path("configs").glob(f"{base}-*.yaml"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_recipe_overlay_is_valid_and_writes_its_own_folder(overlay):
    """Each recipe config (`--configfile configs/BASE.yaml configs/BASE-x.yaml`) is valid laid
    over its base and writes its results under its own name, never the base's."""
    base = "configs/covid-blues.yaml" if "covid-blues-" in overlay else "configs/pocus-diagnosis.yaml"
    cfg = _laid_over(base, overlay)
    assert cfg["results"] == f"results/{Path(overlay).stem}"


def test_the_pocus_recipes_are_the_sizes_and_encoders_they_say():
    """The POCUS diagnosis recipes compared in docs/results-pocus-diagnosis.md: the default at
    112 px, the 224-px ones at 224 (frames stored at the size the CNN takes), lite2 at 260."""
    base = "configs/pocus-diagnosis.yaml"
    assert load_config(base)["frames"]["size"] == 112 == load_config(base)["train"]["image_size"]
    for name, size in (("224", 224), ("224-ensemble", 224), ("224-3seeds", 224), ("blocks", 112), ("3seeds", 112)):
        cfg = _laid_over(base, f"configs/pocus-diagnosis-{name}.yaml")
        assert cfg["frames"]["size"] == size == cfg["train"]["image_size"], name
    assert _laid_over(base, "configs/pocus-diagnosis-3seeds.yaml")["train"]["seeds"] == [42, 43, 44]
    lite2 = _laid_over(base, "configs/pocus-diagnosis-lite2.yaml")
    assert lite2["train"]["backbones"] == ["efficientnet_lite2"] and lite2["train"]["image_size"] == 260


def test_every_config_the_docs_name_exists():
    """The pages' "How it was made" commands and the README name configs that a reader can run."""
    import re

    pages = [Path("README.md"), *Path("docs").glob("*.md"), *Path("docs/parts").glob("*.md")]
    named = {m for page in pages for m in re.findall(r"configs/[\w.-]+\.yaml", page.read_text())}
    assert len(named) > 10
    assert sorted(n for n in named if not Path(n).is_file()) == []
