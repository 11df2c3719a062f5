"""A step's `--set-resources` and `--set-threads` (a profile's) for every copy of its rule.

Snakemake matches those settings by exact rule name, but the workflow runs a step as several
rules: one per scope (`train_outer2`, each outer fold's and model seed's copy) and one per share of
the videos (`embed_3`). A profile that names the step (`train: {gpu: 1}`) reached only the root
scope's copy, so a nested run's outer folds trained and inferred without the GPU it asked for. The Snakefile calls
`apply_step_settings` once its rules exist: every copy gets its step's settings, and a setting
that names the copy itself (`train_outer2: {gpu: 2}`) still wins.
"""

from __future__ import annotations

from collections.abc import Mapping


def apply_step_settings(workflow, step_of_rule: Mapping[str, str]) -> None:
    """Give each rule copy (`step_of_rule`: rule name -> its step) its step's overrides, as
    Snakemake gives a rule the overrides of its own name (snakemake.workflow.Workflow.rule)."""
    settings = workflow.resource_settings
    # the parsed forms Snakemake applies itself: expressions such as "32000 * attempt" keep working
    resources = settings._parsed_overwrite_resources
    threads = settings._parsed_overwrite_threads
    for rule in workflow.rules:
        step = step_of_rule.get(rule.name, rule.name)
        if step == rule.name:
            continue
        if step in threads and rule.name not in threads:
            rule.resources["_cores"] = threads[step]
        if step in resources:
            rule.resources.update(resources[step])
            rule.resources.update(resources.get(rule.name, {}))
