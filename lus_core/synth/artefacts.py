"""What a video shows: static anatomy (ribs, chest wall, pleura depth) and the score-bearing findings.

Findings are a function of a latent *severity* in [0, 1] (class index / (C - 1), jittered per
video so that neighbouring classes overlap). Each finding switches on over a band of severity
through a smooth curve, which gives exactly the clinical LUS scheme for 4 classes and a graded
version of it for any other number of ordered classes:

    severity   ~0      A-lines (reverberations of the pleura at 2x, 3x its depth), lung sliding,
                       at most a physiological B-line or two
               ~1/3    a few B-lines (laser-like comet tails from the pleura to the bottom)
               ~2/3    many B-lines, some confluent, irregular / fragmented pleural line
               ~1      white lung (diffuse bright lung) and subpleural consolidation
                       (tissue-like region with air bronchograms and a shredded deep border)

B-line counts are Poisson around a rate that rises with severity, so counts of neighbouring
classes overlap; amplitudes, widths and acquisition settings vary too. All geometry here is in
polar pixels (rows = depth, columns = beam angle); lung content lives on a *canvas* M columns
wider on each side than the fan so that it can slide laterally with respiration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


def _sigmoid(x):
    return 0.5 + 0.5 * np.tanh(0.5 * x)


# --- severity -> feature strength (each in [0, 1]) -------------------------------------------
def a_line_strength(s: float) -> float:
    return float(np.clip(1.0 - s / 0.42, 0.0, 1.0))


def b_line_rate(s: float) -> float:
    """Expected number of B-lines in the intercostal window."""
    return 0.3 + 9.0 * s**1.6


def confluence(s: float) -> float:
    return float(_sigmoid((s - 0.58) / 0.07))


def pleural_irregularity(s: float) -> float:
    return float(_sigmoid((s - 0.5) / 0.07))


def white_lung(s: float) -> float:
    return float(_sigmoid((s - 0.85) / 0.04))


def consolidation_probability(s: float) -> float:
    return float(_sigmoid((s - 0.88) / 0.04))


# --- smooth random fields ----------------------------------------------------------------------
def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: tuple[float, ...]) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation; shape (n,) or (rows, cols).

    sigma is (sigma,) or (sigma_rows, sigma_cols) in pixels.
    """
    shape2 = (1, shape[0]) if len(shape) == 1 else shape
    sig = (0.0, sigma[0]) if len(shape) == 1 else sigma
    pad = [int(3 * s) + 1 for s in sig]
    white = rng.standard_normal((shape2[0] + 2 * pad[0], shape2[1] + 2 * pad[1])).astype(np.float32)
    out = cv2.GaussianBlur(white, (0, 0), sigmaX=max(sig[1], 0.01), sigmaY=max(sig[0], 0.01))
    out = out[pad[0] : pad[0] + shape2[0], pad[1] : pad[1] + shape2[1]]
    out = (out - out.mean()) / (out.std() + 1e-8)
    return out.reshape(shape).astype(np.float32)


# --- static anatomy ----------------------------------------------------------------------------
@dataclass
class Layout:
    """Per-video anatomy in polar pixels (the probe sits on a different intercostal space each video)."""

    pleura_rows: np.ndarray  # (n_angle,) depth row of the pleural line at rest
    wall: np.ndarray  # (n_depth, n_angle) echogenicity of the chest wall (used above the pleura)
    shadow: np.ndarray  # (n_depth, n_angle) multiplicative rib shadow (1 = no shadow)
    rib_cap: np.ndarray  # (n_depth, n_angle) bright rib cortex
    window: tuple[float, float]  # polar columns of the intercostal window between the ribs


def draw_layout(
    rng: np.random.Generator, pleura_rows: np.ndarray, n_depth: int, wall_echo: float, k: float
) -> Layout:
    """Ribs (one or two acoustic shadows, `bat sign`) and chest-wall layers; k = size / 160."""
    n_angle = pleura_rows.shape[0]
    rows = np.arange(n_depth, dtype=np.float32)[:, None]
    cols = np.arange(n_angle, dtype=np.float32)[None, :]
    p_mean = float(pleura_rows.mean())

    # chest wall: skin, subcutaneous fat, fascia, muscle with horizontal striations
    r = rows[:, 0]
    fat_end = p_mean * rng.uniform(0.25, 0.45)
    profile = rng.uniform(0.3, 0.5) * np.exp(-0.5 * ((r - 1.0) / (1.2 * k)) ** 2)
    profile += 0.55 * wall_echo * _sigmoid((r - 3 * k) / k) * (1 - _sigmoid((r - fat_end) / k))
    profile += wall_echo * _sigmoid((r - fat_end) / k)
    for depth in (fat_end, rng.uniform(fat_end + 3 * k, max(fat_end + 4 * k, p_mean - 3 * k))):
        profile += rng.uniform(0.15, 0.35) * np.exp(-0.5 * ((r - depth) / (0.9 * k)) ** 2)
    striation = 1 + 0.3 * smooth_noise(rng, (n_depth, n_angle), (1.0 * k, 12 * k))
    wall = (profile[:, None] * np.clip(striation, 0.2, None)).astype(np.float32)

    # ribs: bright curved cortex slightly above the pleura, dark shadow below
    n_ribs = 2 if rng.uniform() < 0.75 else 1
    sides = ["left", "right"] if n_ribs == 2 else [str(rng.choice(["left", "right"]))]
    shadow = np.ones((n_depth, n_angle), np.float32)
    cap = np.zeros((n_depth, n_angle), np.float32)
    lo, hi = 0.0, float(n_angle - 1)
    for side in sides:
        half = rng.uniform(0.06, 0.11) * n_angle
        centre = rng.uniform(-0.02, 0.16) * n_angle
        if side == "right":
            centre = n_angle - 1 - centre
            hi = min(hi, centre - half)
        else:
            lo = max(lo, centre + half)
        top = p_mean - rng.uniform(2.0, 5.0) * k
        rib_row = top + 2.5 * k * ((cols - centre) / half) ** 2
        across = _sigmoid((half - np.abs(cols - centre)) / (1.2 * k))
        shadow *= 1 - (1 - rng.uniform(0.03, 0.1)) * across * _sigmoid((rows - rib_row - 1.5 * k) / (0.8 * k))
        cap += rng.uniform(0.8, 1.2) * across * np.exp(-0.5 * ((rows - rib_row) / (1.3 * k)) ** 2)
    return Layout(pleura_rows.astype(np.float32), wall, shadow, cap, (lo, hi))


# --- findings (the score) ----------------------------------------------------------------------
@dataclass
class Findings:
    """Score-bearing content of one segment; lung arrays are on the sliding canvas (n_depth, width)."""

    severity: float
    a_line_amp: float
    pleura_amp: float
    pleura_sigma: float
    irregular: np.ndarray  # (width,) pleural line displacement, rows
    fragment: np.ndarray  # (width,) pleural line brightness factor
    b_pos: np.ndarray  # (n_b,) canvas columns
    b_width: np.ndarray  # (n_b,) Gaussian sigma, columns
    b_amp: np.ndarray  # (n_b,)
    b_flicker: np.ndarray  # (n_b,) depth of the respiratory fade in/out
    b_phase: np.ndarray  # (n_b,)
    lung: np.ndarray  # (n_depth, width) aerated lung echogenicity (haze + white lung)
    cons_mask: np.ndarray  # (n_depth, width) 1 inside the consolidation
    cons_echo: np.ndarray  # (n_depth, width) echogenicity inside the consolidation

    @property
    def n_b_lines(self) -> int:
        return int(self.b_pos.shape[0])


def draw_findings(
    rng: np.random.Generator, severity: float, layout: Layout, margin: int, lung_haze: float, k: float
) -> Findings:
    """Draw the findings of one segment at `severity` in [0, 1]; k = size / 160 (pixel scale)."""
    s = float(severity)
    n_depth, n_angle = layout.wall.shape
    width = n_angle + 2 * margin
    rows = np.arange(n_depth, dtype=np.float32)[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    depth = rows / (n_depth - 1)
    p_mean = float(layout.pleura_rows.mean())
    lo, hi = layout.window[0] + margin, layout.window[1] + margin

    # pleural line: thin and continuous when normal, displaced, thickened and fragmented when sick
    irr = pleural_irregularity(s)
    irregular = irr * rng.uniform(1.2, 3.0) * k * smooth_noise(rng, (width,), (3.0 * k,))
    gaps = np.clip(smooth_noise(rng, (width,), (2.5 * k,)) - 0.2, 0, None)
    fragment = np.clip(1 - irr * rng.uniform(0.5, 0.9) * gaps, 0.05, 1)
    fragment *= 1 + 0.15 * smooth_noise(rng, (width,), (4.0 * k,))
    pleura_amp = rng.uniform(0.9, 1.25)
    pleura_sigma = (0.8 + 0.9 * irr) * k

    # A-lines fade as B-lines appear
    a_line_amp = a_line_strength(s) * rng.uniform(0.45, 0.9)

    # B-lines: overlapping Poisson counts, some confluent, inside the intercostal window
    n_b = int(min(rng.poisson(b_line_rate(s)), 16))
    b_pos = rng.uniform(lo + 1, max(lo + 2, hi - 1), n_b)
    wide = rng.uniform(size=n_b) < confluence(s)
    b_width = np.where(wide, rng.uniform(2.5, 6.0, n_b), rng.uniform(0.7, 1.6, n_b)) * k
    b_amp = rng.uniform(0.4, 0.95, n_b) * np.where(wide, 0.85, 1.0)
    b_flicker = rng.uniform(0.0, 0.6, n_b)
    b_phase = rng.uniform(0, 2 * math.pi, n_b)

    # aerated lung: dim haze; white lung: diffuse, streaky brightness
    lung = lung_haze * (1 + 0.25 * smooth_noise(rng, (n_depth, width), (6 * k, 6 * k))) * (1 - 0.3 * depth)
    wl = white_lung(s) * rng.uniform(0.2, 0.5)
    if wl > 0.01:
        streaks = (
            1 + 0.35 * smooth_noise(rng, (width,), (1.8 * k,)) + 0.2 * smooth_noise(rng, (width,), (12 * k,))
        )
        inside = _sigmoid((x - lo) / (2 * k)) * _sigmoid((hi - x) / (2 * k))
        lung = lung + wl * np.clip(streaks, 0.2, None)[None, :] * inside * (1 - 0.35 * depth)
    lung = np.clip(lung, 0, None).astype(np.float32)

    # subpleural consolidation: tissue-like, hypoechoic to white lung, air bronchograms, shred sign
    cons_mask = np.zeros((n_depth, width), np.float32)
    cons_echo = np.zeros((n_depth, width), np.float32)
    if rng.uniform() < consolidation_probability(s):
        half = rng.uniform(0.12, 0.28) * n_angle
        centre = rng.uniform(lo + 0.3 * half, max(lo + 0.3 * half + 1, hi - 0.3 * half))
        extent = rng.uniform(0.12, 0.3) * n_depth
        across = np.clip(1 - ((x[0] - centre) / half) ** 2, 0, None)
        bottom = p_mean + extent * np.sqrt(across) * (0.8 + 0.2 * smooth_noise(rng, (width,), (6 * k,)))
        bottom += 1.5 * k * smooth_noise(rng, (width,), (1.0 * k,)) * (across > 0)
        lateral = _sigmoid((half - np.abs(x - centre)) / (1.5 * k))
        cons_mask = (_sigmoid((bottom[None, :] - rows) / (0.8 * k)) * lateral).astype(np.float32)
        echo = rng.uniform(0.28, 0.45) * (1 + 0.25 * smooth_noise(rng, (n_depth, width), (3 * k, 3 * k)))
        echo += 0.5 * np.exp(-0.5 * ((rows - bottom[None, :]) / (1.2 * k)) ** 2) * lateral  # shredded border
        for _ in range(2 + rng.poisson(3)):  # air bronchograms: short bright branching echoes
            bx = centre + rng.uniform(-0.7, 0.7) * half
            by = p_mean + rng.uniform(0.2, 0.8) * max(float(np.interp(bx, x[0], bottom)) - p_mean, 2.0)
            sx, sy = rng.uniform(1.2, 3.0) * k, rng.uniform(0.6, 1.1) * k
            echo += rng.uniform(0.5, 1.0) * np.exp(-0.5 * (((x - bx) / sx) ** 2 + ((rows - by) / sy) ** 2))
        cons_echo = np.clip(echo, 0, None).astype(np.float32)

    return Findings(
        severity=s,
        a_line_amp=float(a_line_amp),
        pleura_amp=float(pleura_amp),
        pleura_sigma=float(pleura_sigma),
        irregular=irregular.astype(np.float32),
        fragment=fragment.astype(np.float32),
        b_pos=b_pos,
        b_width=b_width,
        b_amp=b_amp,
        b_flicker=b_flicker,
        b_phase=b_phase,
        lung=lung,
        cons_mask=cons_mask,
        cons_echo=cons_echo,
    )
