"""Load and validate a workflow config against lus_core/config_schema.yaml.

The same schema serves Snakemake (rules/common.smk) and the `lus` command line, so a config
is checked identically wherever it is used.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

import jsonschema
import yaml

from lus_core.class_order import nominal_conflicts
from lus_core.cnn.settings import finetune_problems

SCHEMA_PATH = Path(__file__).with_name("config_schema.yaml")


class ConfigError(ValueError):
    """A config key or value is wrong; the message names the key and what was expected."""


@cache
def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _with_defaults(validator_class):
    # jsonschema does not fill defaults by itself; extend it as its FAQ recommends
    validate_props = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


class ConfigSources:
    """Where each key of a merged config came from: YAML files in order of precedence, then overrides.

    Snakemake merges the Snakefile's `configfile:`, every `--configfile` and `--config` into one
    dict; an error message names the file (or `--config`) that last set the offending key.
    """

    def __init__(self, layers: list[tuple[str, dict]]):
        self.layers = layers  # lowest precedence first

    @classmethod
    def from_snakemake(cls, configfiles, cli_configfiles, overrides) -> ConfigSources:
        cli = [Path(f).resolve() for f in cli_configfiles]
        files = [Path(f).resolve() for f in configfiles if Path(f).resolve() not in cli] + cli
        layers = []
        for f in dict.fromkeys(files):
            try:
                layers.append((str(f), yaml.safe_load(f.read_text()) or {}))
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigError(f"{f}: cannot read config: {exc}") from exc
        if overrides:
            layers.append(("--config", dict(overrides)))
        return cls(layers)

    def where(self, key: str | list = ()) -> str:
        """The source that last set `key` ('a.b' or a path list), or every file when none did."""
        path = key.split(".") if isinstance(key, str) else [str(p) for p in key]
        for name, layer in reversed(self.layers):
            if path and _has_key(layer, path):
                return name
        names = [name for name, _ in self.layers]
        return " + ".join(names) if names else "config"

    def __str__(self) -> str:
        return self.where()


def _has_key(layer, path: list[str]) -> bool:
    cur = layer
    for p in path:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and p.isdigit() and int(p) < len(cur):
            cur = cur[int(p)]
        else:
            return False
    return True


def source_of(source, key) -> str:
    """The file (or --config) a key came from, for error messages."""
    return source.where(key) if isinstance(source, ConfigSources) else str(source)


def validate_config(config: dict, source: str | ConfigSources = "config") -> dict:
    """Fill defaults in place and check every key; raise ConfigError naming each bad key and its file."""
    errors = sorted(_Validator(load_schema()).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("; ".join(f"{source_of(source, _error_key(e))}: {_describe(e)}" for e in errors[:5]))
    _check_semantics(config, source)
    _resolve_data_paths(config)
    if [int(s) for s in config["train"]["seeds"]] == [int(config["seed"])]:
        config["train"]["seeds"] = []  # the run's own seed alone is the default: the same run, the same records
    return config


def with_defaults(config: dict) -> dict:
    """A config read back from a run's files, with today's schema defaults filled in for the keys
    it predates (no other check: it was validated when the run was made)."""
    config = copy.deepcopy(config)
    for _ in _Validator(load_schema()).iter_errors(config):
        pass
    return config


def _resolve_data_paths(config: dict) -> None:
    root = Path(config["data_root"])
    ds = config["dataset"]
    ds["video_dirs"] = [str(root / d) if not Path(d).is_absolute() else d for d in ds["video_dirs"]]
    if ds["labels"] and not Path(ds["labels"]).is_absolute():
        ds["labels"] = str(root / ds["labels"])
    if ds["patient_salt_file"] and not Path(ds["patient_salt_file"]).is_absolute():
        ds["patient_salt_file"] = str(root / ds["patient_salt_file"])
    config["data_root"] = "."  # resolved once; validating again is a no-op


def _error_key(error: jsonschema.ValidationError) -> list:
    """The key path an error is about (for an unknown key, the unknown key itself)."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        path += extra[:1]
    return path


def _describe(error: jsonschema.ValidationError) -> str:
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        return f"unknown key {', '.join(repr(x) for x in extra)} under '{key}' (allowed: {allowed})"
    expected = error.schema.get("description", "")
    return f"key '{key}': {error.message}" + (f" (expected: {expected})" if expected else "")


def _check_semantics(config: dict, source) -> None:
    ds = config["dataset"]
    if ds["synthetic"]["enabled"] and (ds["video_dirs"] or ds["labels"]):
        raise ConfigError(
            f"{source_of(source, 'dataset.synthetic.enabled')}: key 'dataset.synthetic.enabled' is true but dataset.video_dirs/labels are set too; "
            "set dataset.synthetic.enabled: false to use your videos (a --configfile extends config.yaml)"
        )
    if not ds["synthetic"]["enabled"]:
        if not ds["video_dirs"]:
            raise ConfigError(f"{source_of(source, 'dataset.video_dirs')}: key 'dataset.video_dirs' is empty and dataset.synthetic.enabled is false")
        if not ds["labels"]:
            raise ConfigError(f"{source_of(source, 'dataset.labels')}: key 'dataset.labels' is required for a real dataset")
    problems = finetune_problems(config)
    if problems:
        raise ConfigError(f"{source_of(source, 'train.finetune')}: key 'train.finetune': " + "; ".join(problems))
    conflicts = nominal_conflicts(config)
    if conflicts:
        raise ConfigError("; ".join(f"{source_of(source, key)}: key '{key}': {why}" for key, why in conflicts))
    if config["frames"]["size"] < config["train"]["image_size"] // 4:
        raise ConfigError(f"{source_of(source, 'train.image_size')}: key 'train.image_size' is far larger than 'frames.size'; raise frames.size")


def load_config(path: str | Path, overrides: dict | None = None) -> dict:
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    if overrides:
        config = deep_merge(config, overrides)
    return validate_config(config, source=str(path))


def config_get(config, *path, default=None):
    """config[path[0]][path[1]]..., or `default` where a key is missing (configs read back from files)."""
    cur = config
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return default
        cur = cur[p]
    return cur


def deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
