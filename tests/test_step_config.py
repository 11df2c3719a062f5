"""Every config key reruns exactly the steps that read it, and their dependents.

Each step declares the keys it reads (lus_core.workflow.step_config.STEP_KEYS); its rule's
`params.config` is that slice and its script hands only that slice to lus_core. On a finished
tiny run, every key of the schema is changed in turn and a dry run must plan exactly the steps
that declare the key plus everything downstream of them, nothing else; keys that shape the run
itself (RUN_WIDE) are listed with the reason and left out.
"""

from __future__ import annotations

import ast
import json

import pytest
import yaml

from lus_core.config import load_config, load_schema
from lus_core.workflow.step_config import RUN_WIDE, STEP_KEYS, reads, step_config, step_of_rule, step_params
from tests.dag_plans import DryRuns
from tests.workflow_helpers import REPO, planned_jobs

TINY = REPO / "configs" / "tiny.yaml"


def schema_leaves(schema: dict | None = None, prefix: str = "") -> dict[str, dict]:
    """Every leaf key of the config schema ("a.b.c") -> its schema."""
    schema = load_schema() if schema is None else schema
    out = {}
    for name, sub in schema.get("properties", {}).items():
        key = f"{prefix}{name}"
        if sub.get("type") == "object" and sub.get("properties"):
            out.update(schema_leaves(sub, key + "."))
        else:
            out[key] = sub
    return out


def tiny_config() -> dict:
    """The tiny run's config: tiny.yaml over config.yaml, as Snakemake lays them."""
    return load_config(REPO / "config.yaml", overrides=yaml.safe_load(TINY.read_text()))


def get(config: dict, key: str):
    for part in key.split("."):
        config = config[part]
    return config


def nested(key: str, value) -> dict:
    out: dict = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


# A value other than the tiny run's for the keys whose type alone does not give one
OTHER_VALUES = {
    "seed": 8,
    "classes": [0, 1, 2, 3, 4],
    "dataset.synthetic.size": 98,  # even, for mp4v
    "dataset.label_columns.video": "file",
    "dataset.label_columns.score": "severity",
    "dataset.label_columns.patient": "subject",
    "dataset.label_columns.start": "first",
    "dataset.label_columns.end": "last",
    "dataset.findings": {"a_lines": "b_lines"},  # (--config merges mappings: a key cannot be removed)
    "split.k_test": 1,
    "split.force_test": ["P01"],
    "split.force_train": ["P02"],
    "split.n_folds": 3,
    "train.weights": {"efficientnet_lite0": "imagenet", "scratch": "none"},
    "train.finetune": "all",
    "train.augment.scale": [0.8, 1.2],
    "train.augment.multiply": [0.7, 1.3],
    "train.augment.blur_sigma": [0.2, 1.0],
    "confidence.params": {"mlp": {"hidden": 8}},
    "similarity.k": [4],
    "similarity.fallback": ["mean"],
    "similarity.fallback_diversity": ["none", "video"],
    "evaluate.selection.criterion": "accuracy",
}


# keys whose other value is only valid with other keys changed too (class_order nominal refuses
# SORD and neighbour means): the change covers them all, and every step reading any of them reruns
COMPANIONS = {
    "class_order": {"train.loss": "ce", "video_model.loss": "ce", "similarity.fallback": ["vote"]},
}


def change_of(key: str, value) -> dict:
    """The config change that sets `key` to `value` (with its companions)."""
    change = nested(key, value)
    for other, other_value_ in COMPANIONS.get(key, {}).items():
        change = merge(change, nested(other, other_value_))
    return change


def other_value(key: str, schema: dict, current):
    """A valid value different from `current`."""
    if key in OTHER_VALUES:
        return OTHER_VALUES[key]
    kinds = schema.get("type")
    if "enum" in schema:
        return next(v for v in schema["enum"] if v != current)
    if kinds == "boolean":
        return not current
    if kinds == "integer":
        top = schema.get("maximum")
        return current + 1 if top is None or current + 1 <= top else current - 1
    if kinds == "number":
        top = schema.get("maximum", schema.get("exclusiveMaximum"))
        new = current * 0.9 if current else 0.1
        return new if top is None or new < top else current * 0.9
    raise AssertionError(f"no other value for {key} ({schema}); add one to OTHER_VALUES")


def checked_keys() -> list[str]:
    return [k for k in schema_leaves() if k not in RUN_WIDE]


# ----------------------------------------------------------------------------- declarations


def test_every_schema_key_is_read_by_a_step_or_run_wide():
    config = tiny_config()
    leaves = schema_leaves()
    assert set(RUN_WIDE) <= set(leaves), sorted(set(RUN_WIDE) - set(leaves))
    for step, keys in STEP_KEYS.items():
        for key in keys:
            assert key == "*" or key in leaves or any(k.startswith(key + ".") for k in leaves), (step, key)
    unread = [k for k in leaves if k not in RUN_WIDE
              and not any(reads(step, k, config) for step in STEP_KEYS if "*" not in STEP_KEYS[step])]
    assert unread == [], f"keys no step declares (declare them, or list them in RUN_WIDE with why): {unread}"
    assert all(RUN_WIDE.values())  # each with its reason


def test_a_step_receives_only_the_keys_it_declares():
    config = tiny_config()
    sliced = step_config(config, "fit_video_model")
    assert set(sliced) == {"seed", "classes", "video_model"}
    assert "enabled" not in sliced["video_model"] and sliced["video_model"]["epochs"] == config["video_model"]["epochs"]
    with pytest.raises(KeyError):
        sliced["train"]  # noqa: B018 (a step cannot read what it did not declare)
    # augmentation reaches a frozen encoder's features only through cached views
    assert "augment" not in step_config(config, "embed")["train"]
    views = {**config, "train": {**config["train"], "cache_views": 2}}
    assert step_config(views, "embed")["train"]["augment"] == config["train"]["augment"]
    assert step_config(config, "report") == config


def test_every_rule_passes_its_steps_slice_and_no_script_reads_the_whole_config(tmp_path):
    """Every rule of the parsed workflow (a nested run's, so that the outer folds' copies are there
    too) passes exactly its step's slice of the config."""
    overlay = yaml.safe_load((REPO / "configs/tiny-nested.yaml").read_text())
    seeds = tmp_path / "seeds.yaml"  # and two model seeds, so that the replicas' rules are there too
    seeds.write_text("train: {seeds: [7, 8]}\n")
    config = load_config(REPO / "config.yaml", overrides=merge(merge(yaml.safe_load(TINY.read_text()), overlay),
                                                                 {"results": "results", "train": {"seeds": [7, 8]}}))
    params = DryRuns(tmp_path, [TINY, REPO / "configs/tiny-nested.yaml", seeds], {"results": "results"}).rule_params()
    steps = {name: step_of_rule(name) for name in params if name != "all"}
    assert set(steps.values()) == set(STEP_KEYS), set(steps.values()) ^ set(STEP_KEYS)
    for name, step in steps.items():
        seed = 8 if name.endswith("_seed1") else 7
        assert params[name].get("config") == step_params(config, step, seed), name
    for script in (REPO / "workflow_scripts").glob("*.py"):
        text = script.read_text()
        assert "sm.config" not in text and "snakemake.config" not in text, script.name


def merge(base: dict, over: dict) -> dict:
    """``over`` laid over ``base`` key by key, as Snakemake lays config files."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


CONFIG_NAMES = {"config", "cfg", "tc", "cc", "ds", "ev", "sim", "fcfg", "dcfg", "sp", "synth_cfg", "train_cfg"}


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, ast.Subscript | ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def test_the_schema_is_the_only_source_of_defaults():
    """No `.get(key, default)` on a config key and no defaults dicts in lus_core: code reads the
    validated config, whose defaults come from lus_core/config_schema.yaml only."""
    keys = {part for key in schema_leaves() for part in key.split(".")}
    found = []
    for path in (REPO / "lus_core").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                    and len(node.args) >= 2 and isinstance(node.args[0], ast.Constant) and node.args[0].value in keys
                    and _root_name(node.func.value) in CONFIG_NAMES):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and "DEFAULTS" in t.id for t in node.targets):
                found.append(f"{path.relative_to(REPO)}:{node.lineno} (a defaults table)")
    assert found == []


# ----------------------------------------------------------------------------- reruns on a finished run


@pytest.fixture(scope="module")
def dry_runs(tiny_run):
    return DryRuns(tiny_run.workdir, [TINY], {"results": "results"})


@pytest.mark.slow
def test_in_process_dry_runs_agree_with_snakemake_n(tiny_run, dry_runs, tmp_path):
    """The in-process planner the key-by-key test uses plans what `snakemake -n` plans."""
    assert dry_runs.plan() == set()
    for key, value in (("evaluate.selection.criterion", "accuracy"), ("similarity.fallback", ["mean"]),
                       ("train.epochs", 2)):
        overlay = tmp_path / "overlay.json"
        overlay.write_text(json.dumps(nested(key, value)))
        cli = set(planned_jobs(*tiny_run.with_configs(str(overlay)))) - {"all"}
        assert dry_runs.plan(nested(key, value)) == cli, key


@pytest.mark.slow
def test_changing_the_selection_criterion_reruns_the_evaluation_and_what_shows_it(dry_runs):
    """The case that went wrong: a new criterion must choose again, not leave the old choice."""
    assert dry_runs.plan(nested("evaluate.selection.criterion", "accuracy")) == {
        "evaluate", "gradcam", "report", "manifest"}
    # how neighbours' scores are combined does not rebuild any index
    assert dry_runs.plan(nested("similarity.fallback", ["mean"])) == {
        "query_neighbors", "evaluate", "gradcam", "report", "manifest"}


@pytest.mark.slow
def test_changing_each_key_reruns_exactly_its_steps_and_dependents(dry_runs):
    config = tiny_config()
    downstream = dry_runs.dependents()
    leaves = schema_leaves()
    wrong = {}
    for key in checked_keys():
        value = other_value(key, leaves[key], get(config, key))
        assert value != get(config, key), key
        changed = [key, *COMPANIONS.get(key, {})]
        declaring = {rule for rule in downstream if any(reads(step_of_rule(rule), k, config) for k in changed)}
        expected = set().union(*({rule} | downstream[rule] for rule in declaring))
        got, present = dry_runs.plan_and_rules(change_of(key, value))
        expected &= present  # a step the change removes (e.g. no frozen encoder: no embed) does not run
        if got != expected:
            wrong[key] = {"missing": sorted(expected - got), "unexpected": sorted(got - expected)}
    assert wrong == {}
