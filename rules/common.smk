# Config validation, the video table, input functions and the code versions of each step.
import functools
import json
import sys
import time

from lus_core.cnn.settings import cache_enabled, ensemble_of, space_follows_model
from lus_core.config import ConfigSources, validate_config
from lus_core.frames.skipped import format_skipped, read_skipped
from lus_core.runs.layout import RunLayout
from lus_core.runs.run_time import record_run
from lus_core.split.scopes import model_seeds, outer_scopes, replicas, scopes, split_scope, training_scopes
from lus_core.workflow.code_version import code_version_for
from lus_core.workflow.dag import AFTER_TRAIN_PRIORITY, check_split_feasible, job_shards, train_priority, video_table
from lus_core.workflow.results_lock import ResultsFolderBusy, hold_results_folder
from lus_core.workflow.step_config import step_params
from lus_core.workflow.step_resources import apply_step_settings
from snakemake.exceptions import WorkflowError

# errors name the YAML file (or --config) that set the key
CONFIG_SOURCES = ConfigSources.from_snakemake(
    workflow.configfiles, workflow.overwrite_configfiles, workflow.config_settings.config
)
validate_config(config, source=CONFIG_SOURCES)

R = config["results"]
L = RunLayout(R)  # every path of the results folder (lus_core.runs.layout)
RUN_STARTED = time.time()  # the jobs of this invocation are the benchmark files written after it
CLASSES = config["classes"]
BACKBONES = config["train"]["backbones"]
# output layers on a frozen encoder's cached embeddings train in one job per backbone and scope
# (rule train_heads); the others one job per fold (rule train)
HEAD_BACKBONES = [b for b in BACKBONES if cache_enabled(config, b)]
FULL_BACKBONES = [b for b in BACKBONES if b not in HEAD_BACKBONES]
FOLDS = [str(i) for i in range(config["split"]["n_folds"])]
METHODS = config["confidence"]["methods"]
SPACES = config["similarity"]["spaces"]
VIDEO_MODEL = config["video_model"]["enabled"]
ENSEMBLE = ensemble_of(config)
SYNTHETIC = config["dataset"]["synthetic"]["enabled"]
# the training-and-selection contexts (lus_core.split.scopes): the root (deployed) one, and with
# split.outer_folds K > 1 one per outer fold, each under R/outer/{o}/
SCOPES = scopes(config)
OUTER_SCOPES = outer_scopes(config)
# with several model seeds (train.seeds) each scope has one replica per seed, each with its own
# models: (replica, its seed) of every scope; the first seed's replica is the scope itself
TRAINING_SCOPES = training_scopes(config)
SEEDS = model_seeds(config)
SYNTH_DIR = L.synthetic_dir()
VIDEOS = video_table(config, SYNTH_DIR)
check_split_feasible(config, VIDEOS, CONFIG_SOURCES)


wildcard_constraints:
    backbone="|".join(BACKBONES),
    fold=r"\d+|all",
    space="|".join(SPACES),


def video_label_inputs(wildcards):
    # synthetic labels only exist after the synth job; real labels are passed as params so
    # that editing one video's label re-extracts that video's job only
    return [L.synthetic_labels()] if SYNTHETIC else []


def shard_entries(videos):
    """JSON of the videos' entries (path, patient, label ranges), in the job's order."""
    return json.dumps([{"video": v, **VIDEOS[v]} for v in videos], sort_keys=True)


def all_frame_stores(wildcards=None):
    return [L.store(v) for v in sorted(VIDEOS)]


def all_store_records(wildcards=None):
    return [L.store_record(v) for v in sorted(VIDEOS)]


# the step of every copy of its rules (name -> step), so that a profile's settings for the step
# reach all of them (lus_core.workflow.step_resources, applied at the end of the Snakefile)
STEP_OF_RULE = {}


def rule_name(step, copy):
    """A copy of a step's rule: for a scope (`train` for the root scope, `train_outer2` for outer
    fold 2) or a share of the videos (`embed_3`)."""
    name = f"{step}_{copy}" if str(copy) else step
    STEP_OF_RULE[name] = step
    return name


def fold_models(S):
    """The fold models (inner folds and `all`) of a backbone in scope layout S, by fold name."""
    return lambda wildcards: {f: S.model(wildcards.backbone, f) for f in FOLDS + ["all"]}


def confidence_outputs(S):
    """Named outputs of a scope's `fit_confidence` job: each method's model, scores and summary."""
    files = {}
    for m in METHODS:
        files[f"model_{m}"] = S.confidence_model("{backbone}", m)
        files[f"scores_{m}"] = S.confidence_scores("{backbone}", m)
        files[f"summary_{m}"] = S.confidence_summary("{backbone}", m)
    return files


def fold_model_outputs(S):
    """Named outputs of a scope's `train_heads` job: every fold's model, metrics and curve."""
    files = {}
    for f in FOLDS + ["all"]:
        files[f"model_{f}"] = S.model("{backbone}", f)
        files[f"metrics_{f}"] = S.model_metrics("{backbone}", f)
        files[f"curve_{f}"] = S.model_curve("{backbone}", f)
    return files


def index_files(S):
    return lambda wildcards: S.index_files(wildcards.backbone, wildcards.space)


def step_config(step, seed=None):
    """The rule's `params.config`: the config keys its step reads (lus_core.workflow.step_config),
    with its replica's model seed where the step draws from it (lus_core.split.scopes)."""
    return step_params(config, step, seed)


def evaluate_inputs(scope):
    """Named inputs of a scope replica's `evaluate` (and `validate`), one per file (see
    evaluate_input_keys for what each is)."""
    S, first = L.scoped(scope), L.scoped(split_scope(scope)[0])
    files = {}
    for b in BACKBONES:
        files[f"predictions_{b}"] = S.predictions(b)
        for m in METHODS:
            files[f"scores_{b}_{m}"] = S.confidence_scores(b, m)
            files[f"summary_{b}_{m}"] = S.confidence_summary(b, m)
        for s in SPACES:
            # a space the model does not change: the first seed's lists (lus_core.cnn.settings)
            files[f"neighbors_{b}_{s}"] = (S if space_follows_model(config, b, s) else first).neighbors(b, s)
        if VIDEO_MODEL:
            files[f"video_{b}"] = S.video_table(b)
    return files


def evaluate_input_keys():
    """JSON: which named input of `evaluate` belongs to which backbone / (backbone, method) /
    (backbone, space); the script looks inputs up by these names, never by position."""
    return json.dumps({
        "predictions": {b: f"predictions_{b}" for b in BACKBONES},
        "confidence": [[b, m, f"scores_{b}_{m}", f"summary_{b}_{m}"] for b in BACKBONES for m in METHODS],
        "neighbors": [[b, s, f"neighbors_{b}_{s}"] for b in BACKBONES for s in SPACES],
        "video": {b: f"video_{b}" for b in BACKBONES} if VIDEO_MODEL else {},
    }, sort_keys=True)


def report_curve_inputs(wildcards=None):
    """Training curve of each backbone's `all` model, named curve_{backbone}."""
    return {f"curve_{b}": L.model_curve(b, "all") for b in BACKBONES}


def all_models(wildcards=None):
    """Each backbone's `all` model, named model_{backbone}."""
    return {f"model_{b}": L.model(b, "all") for b in BACKBONES}


def embedding_caches(wildcards):
    """The embedding caches a backbone's training and inference read (none without a frozen encoder)."""
    if not cache_enabled(config, wildcards.backbone):
        return []
    return [L.embedding(wildcards.backbone, v) for v in sorted(VIDEOS)]


def final_targets():
    # the frame stores are products of the run (lus predict reads them), so a deleted one is
    # rebuilt: Snakemake regenerates a missing file only when it is a target or a job needs it
    return [L.report(), L.manifest(), L.stores_verified(), *all_frame_stores(), *([L.nested()] if OUTER_SCOPES else [])]


def workflow_benchmark_files():
    """The benchmark file of every job of this invocation's DAG (run or not); None when Snakemake
    does not expose its DAG (the record then counts every benchmark file of the folder)."""
    try:
        return [str(job.benchmark) for job in workflow.dag.jobs if job.benchmark]
    except AttributeError:
        return None


def local_cores():
    """--cores of a local run; None for a cluster run (its executor has no core count)."""
    try:
        return workflow.cores
    except WorkflowError:
        return None


@functools.cache  # the per-video steps' rules share their script: hash it once per start
def script_code(name):
    """Code version of a step: a hash of the lus_core modules its script imports (transitively)."""
    return code_version_for(f"{workflow.basedir}/workflow_scripts/{name}.py")


onstart:
    # one run at a time per results folder, whatever the working directory (Snakemake locks only that)
    if workflow.is_main_process:
        try:
            hold_results_folder(R)
        except ResultsFolderBusy as exc:
            raise WorkflowError(str(exc)) from None


onsuccess:
    # how long this invocation took, from the run's own files (logs/last_run.json, full_run.json);
    # a finished run stays finished when its time cannot be recorded
    try:
        # the DAG's benchmark files: an older layout's leftovers neither count nor block a full run
        record_run(R, RUN_STARTED, local_cores(), workflow_benchmarks=workflow_benchmark_files())
    except Exception as exc:  # noqa: BLE001 (nothing about the time may fail a finished run)
        print(f"warning: the run's time was not recorded in {R}/logs: {exc}", file=sys.stderr)
    # skipped videos are in no result: say so at the end of every run, not only in a CSV
    if message := format_skipped(read_skipped(R), R):
        print(message, file=sys.stderr)
