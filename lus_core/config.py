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


def validate_config(config: dict, source: str = "config") -> dict:
    """Fill defaults in place and check every key; raise ConfigError naming the first bad key."""
    errors = sorted(_Validator(load_schema()).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(f"{source}: " + "; ".join(_describe(e) for e in errors[:5]))
    _check_semantics(config, source)
    _resolve_data_paths(config)
    return config


def _resolve_data_paths(config: dict) -> None:
    root = Path(config["data_root"])
    ds = config["dataset"]
    ds["video_dirs"] = [str(root / d) if not Path(d).is_absolute() else d for d in ds["video_dirs"]]
    if ds["labels"] and not Path(ds["labels"]).is_absolute():
        ds["labels"] = str(root / ds["labels"])
    config["data_root"] = "."  # resolved once; validating again is a no-op


def _describe(error: jsonschema.ValidationError) -> str:
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        return f"unknown key {', '.join(repr(x) for x in extra)} under '{key}' (allowed: {allowed})"
    expected = error.schema.get("description", "")
    return f"key '{key}': {error.message}" + (f" (expected: {expected})" if expected else "")


def _check_semantics(config: dict, source: str) -> None:
    ds = config["dataset"]
    if ds["synthetic"]["enabled"] and (ds["video_dirs"] or ds["labels"]):
        raise ConfigError(
            f"{source}: key 'dataset.synthetic.enabled' is true but dataset.video_dirs/labels are set too; "
            "set dataset.synthetic.enabled: false to use your videos (a --configfile extends config.yaml)"
        )
    if not ds["synthetic"]["enabled"]:
        if not ds["video_dirs"]:
            raise ConfigError(f"{source}: key 'dataset.video_dirs' is empty and dataset.synthetic.enabled is false")
        if not ds["labels"]:
            raise ConfigError(f"{source}: key 'dataset.labels' is required for a real dataset")
    if config["frames"]["size"] < config["train"]["image_size"] // 4:
        raise ConfigError(f"{source}: key 'train.image_size' is far larger than 'frames.size'; raise frames.size")


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
