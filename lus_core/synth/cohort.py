"""The synthetic cohort: which videos exist, who they belong to, what they show, how they were acquired.

Everything random is drawn from a numpy Generator keyed by *what* it is for (not by the order
in which things are generated), using `SeedSequence(seed, spawn_key=key)`:

    (0,)              cohort: each patient's typical severity (spread over the score range)
    (1, p)            patient p's acquisition settings (gain, depth, probe width, noise, ...)
    (2, p)            patient p's video scores and score changes
    (3, p, j, 0)      video j of patient p: anatomy (ribs, chest wall layers)
    (3, p, j, 1, i)   ... findings of its i-th constant-score segment
    (3, p, j, 2, l, k) ... speckle key field k of layer l (0 chest wall, 1 lung)
    (3, p, j, 3, b)   ... electronic noise of frame block b
    (3, p, j, 4)      ... respiratory phase

so a video can be rendered on its own, in any order, in any process, with identical pixels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .geometry import FanGeometry

KEYS = ("n_patients", "videos_per_patient", "frames_per_video", "size", "fps", "colour_videos")  # dataset.synthetic's
CHANGE_PROBABILITY = 0.2  # share of videos whose score changes part-way


def rng_for(seed: int, *key: int) -> np.random.Generator:
    """The Generator for one purpose, independent of every other key and of generation order."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=tuple(int(k) for k in key)))


def resolve_config(synth_cfg: dict) -> dict:
    """`dataset.synthetic`'s values checked and typed (other keys, e.g. `enabled`, ignored); every
    key is needed: its defaults live in the config schema."""
    missing = [k for k in KEYS if k not in synth_cfg]
    if missing:
        raise ValueError(f"dataset.synthetic lacks {missing}: pass the validated config's section")
    cfg = {k: synth_cfg[k] for k in KEYS}
    for key in ("n_patients", "videos_per_patient", "frames_per_video", "size", "colour_videos"):
        if int(cfg[key]) != cfg[key] or int(cfg[key]) < (0 if key == "colour_videos" else 1):
            raise ValueError(f"dataset.synthetic.{key} must be a {'non-negative' if key == 'colour_videos' else 'positive'} "
                             f"integer, got {cfg[key]!r}")
        cfg[key] = int(cfg[key])
    if cfg["size"] < 32 or cfg["size"] % 2:
        raise ValueError(f"dataset.synthetic.size must be even and >= 32 (mp4v), got {cfg['size']}")
    if not float(cfg["fps"]) > 0:
        raise ValueError(f"dataset.synthetic.fps must be > 0, got {cfg['fps']!r}")
    cfg["fps"] = float(cfg["fps"])
    return cfg


def patient_ids(n_patients: int) -> list[str]:
    """`P01`, `P02`, ... (zero-padded to at least two digits)."""
    width = max(2, len(str(n_patients)))
    return [f"P{i + 1:0{width}d}" for i in range(n_patients)]


def video_name(pid: str, j: int) -> str:
    """File name of video j (0-based) of patient `pid`: `patient_P01_v1.mp4` (1-based in the name)."""
    return f"patient_{pid}_v{j + 1}.mp4"


def planned_videos(synth_cfg: dict) -> list[tuple[str, str]]:
    """(file name, patient id) of every video `generate_dataset` writes, without generating anything."""
    cfg = resolve_config(synth_cfg)
    return [
        (video_name(pid, j), pid)
        for pid in patient_ids(cfg["n_patients"])
        for j in range(cfg["videos_per_patient"])
    ]


@dataclass(frozen=True)
class AcquisitionSettings:
    """One patient's scanner settings and body habitus; shared by all videos of the patient."""

    gain: float  # overall brightness multiplier
    gamma: float  # display curve exponent
    half_angle_deg: float  # half the probe's field of view (probe width)
    probe_radius: float  # probe face radius / imaging depth radius
    pleura_depth: float  # depth of the pleural line as a fraction of the imaging depth
    pleura_flatness: float  # 0: pleura concentric with the probe face, 1: straight horizontal line
    attenuation: float  # residual depth attenuation (exp(-attenuation * depth/imaging depth))
    speckle_contrast: float  # 0: no speckle, 1: fully developed (Rayleigh) speckle
    speckle_axial: float  # speckle grain along depth, polar pixels (Gaussian sigma)
    speckle_lateral: float  # speckle grain across beams, polar pixels
    noise: float  # electronic noise, standard deviation in [0, 1] grey units
    resp_period_s: float  # breathing period, seconds
    sliding_px: float  # lateral lung sliding amplitude at full breath, polar pixels
    wall_echo: float  # echogenicity of the chest wall muscle layer
    lung_haze: float  # brightness of aerated lung below the pleura

    @classmethod
    def draw(cls, rng: np.random.Generator) -> AcquisitionSettings:
        u = rng.uniform
        return cls(
            gain=float(u(0.75, 1.3)),
            gamma=float(u(0.8, 1.15)),
            half_angle_deg=float(u(22.0, 32.0)),
            probe_radius=float(u(0.2, 0.34)),
            pleura_depth=float(u(0.15, 0.25)),
            pleura_flatness=float(u(0.3, 1.0)),
            attenuation=float(u(0.15, 0.9)),
            speckle_contrast=float(u(0.65, 1.0)),
            speckle_axial=float(u(0.6, 1.0)),
            speckle_lateral=float(u(1.1, 2.0)),
            noise=float(u(0.005, 0.03)),
            resp_period_s=float(u(2.5, 5.0)),
            sliding_px=float(u(2.0, 5.0)),
            wall_echo=float(u(0.16, 0.3)),
            lung_haze=float(u(0.1, 0.2)),
        )


@dataclass(frozen=True)
class Segment:
    """A run of frames with one score: class index, inclusive frame range, latent severity in [0, 1]."""

    class_index: int
    start: int
    end: int
    severity: float


@dataclass(frozen=True)
class VideoPlan:
    """Everything needed to render one video (pure data; `render.render_video` turns it into pixels)."""

    name: str  # file name, e.g. patient_P01_v1.mp4
    patient: str  # patient id, e.g. P01
    patient_index: int  # p (0-based), part of the random key
    video_index: int  # j (0-based), part of the random key
    seed: int
    n_frames: int
    size: int
    fps: float
    num_classes: int
    settings: AcquisitionSettings
    segments: tuple[Segment, ...]
    colour: bool = False  # a colour Doppler box over the grey image (dataset.synthetic.colour_videos)

    def geometry(self) -> FanGeometry:
        """The fan (sector) of this video's frames: probe width and shape from the patient's settings."""
        return FanGeometry(self.size, half_angle_rad(self.settings), self.settings.probe_radius)

    @property
    def key(self) -> tuple[int, ...]:
        """Random key prefix of this video (see module docstring)."""
        return (3, self.patient_index, self.video_index)

    def frame_labels(self) -> np.ndarray:
        """Class index of every frame, int (n_frames,)."""
        out = np.empty(self.n_frames, dtype=np.int64)
        for seg in self.segments:
            out[seg.start : seg.end + 1] = seg.class_index
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["segments"] = [asdict(s) for s in self.segments]
        return d


def severity_of(class_index: int, num_classes: int) -> float:
    """Nominal severity of a class: index / (C - 1), so 0 = normal lung and 1 = the most severe class."""
    return class_index / (num_classes - 1)


def _patient_typical_index(seed: int, n_patients: int, num_classes: int) -> np.ndarray:
    # stratified over the score range and shuffled, so every cohort spans all scores; the range
    # overhangs both ends a little so that the extreme scores are about as common as the others
    rng = rng_for(seed, 0)
    strata = (rng.permutation(n_patients) + rng.uniform(0, 1, n_patients)) / n_patients
    overhang = 0.6 * _spread(num_classes)
    return strata * (num_classes - 1 + 2 * overhang) - overhang


def _spread(num_classes: int) -> float:
    """Width (class-index units) of a patient's distribution of video scores around its typical score."""
    return 0.7 * max(1.0, (num_classes - 1) / 3)


def _video_segments(rng: np.random.Generator, typical: float, n_frames: int, num_classes: int):
    c = num_classes
    ks = np.arange(c)
    width = _spread(c)
    p = np.exp(-0.5 * ((ks - typical) / width) ** 2)
    first = int(rng.choice(c, p=p / p.sum()))
    jitter = 0.2 / (c - 1)  # latent severity spread inside a class: neighbours overlap

    def sev(k: int) -> float:
        return float(np.clip(severity_of(k, c) + rng.normal(0, jitter), 0.0, 1.0))

    changes = rng.uniform() < CHANGE_PROBABILITY and n_frames >= 4
    if not changes:
        return (Segment(first, 0, n_frames - 1, sev(first)),)
    step = int(rng.choice([-1, 1]))
    if not 0 <= first + step < c:
        step = -step
    second = first + step
    lo, hi = max(1, round(0.25 * n_frames)), min(n_frames - 1, round(0.75 * n_frames))
    t_change = int(rng.integers(lo, hi + 1))
    return (Segment(first, 0, t_change - 1, sev(first)), Segment(second, t_change, n_frames - 1, sev(second)))


def plan_cohort(synth_cfg: dict, num_classes: int, seed: int) -> list[VideoPlan]:
    """One `VideoPlan` per planned video, in `planned_videos` order. Cheap: nothing is rendered."""
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes, got {num_classes}")
    cfg = resolve_config(synth_cfg)
    pids = patient_ids(cfg["n_patients"])
    typical = _patient_typical_index(seed, cfg["n_patients"], num_classes)
    n_videos = cfg["n_patients"] * cfg["videos_per_patient"]
    # the colour videos, spread over the cohort (first and last included)
    colour = set(np.linspace(0, n_videos - 1, cfg["colour_videos"]).round().astype(int).tolist()) \
        if cfg["colour_videos"] else set()
    plans = []
    for p, pid in enumerate(pids):
        settings = AcquisitionSettings.draw(rng_for(seed, 1, p))
        score_rng = rng_for(seed, 2, p)
        for j in range(cfg["videos_per_patient"]):
            segments = _video_segments(score_rng, typical[p], cfg["frames_per_video"], num_classes)
            plans.append(
                VideoPlan(
                    name=video_name(pid, j),
                    patient=pid,
                    patient_index=p,
                    video_index=j,
                    seed=int(seed),
                    n_frames=cfg["frames_per_video"],
                    size=cfg["size"],
                    fps=cfg["fps"],
                    num_classes=num_classes,
                    settings=settings,
                    segments=segments,
                    colour=len(plans) in colour,
                )
            )
    return plans


def half_angle_rad(settings: AcquisitionSettings) -> float:
    return math.radians(settings.half_angle_deg)
