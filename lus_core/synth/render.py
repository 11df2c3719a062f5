"""Pixels: turn a `VideoPlan` into uint8 grayscale frames.

Temporal coherence without sequential state: speckle is a complex Gaussian field interpolated
between independent *key fields* (cos/sin weights keep its statistics stationary), respiration
is a sinusoid of time, and B-line fade-in/out follows the breathing phase. Every quantity is a
function of (plan, t), so `render_frame(plan, t)` equals `render_video(plan)[t]` exactly and no
frame or video depends on the order in which others were generated.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .artefacts import Findings, Layout, draw_findings, draw_layout
from .cohort import VideoPlan, rng_for

REFERENCE_SIZE = 160  # acquisition settings are in pixels of a 160 px frame; scaled to plan.size
WALL_DECORRELATION_S = 2.0  # chest wall speckle renews over ~2 s
LUNG_DECORRELATION_S = 0.5  # lung speckle shimmers faster (sliding pleura)
A_LINE_DECAY = 0.6
KNEE = 0.65  # display: linear below, smooth roll-off towards 1 above
NOISE_BLOCK = 16  # frames of electronic noise drawn at once


def _sigmoid(x):
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def _crop(canvas: np.ndarray, start: float, n: int) -> np.ndarray:
    """Columns [start, start + n) of `canvas` (last axis), linearly interpolated at a fractional start."""
    i = math.floor(start)
    f = np.float32(start - i)
    a = canvas[..., i : i + n]
    b = canvas[..., i + 1 : i + 1 + n]
    return a + f * (b - a)


class VideoRenderer:
    """Caches everything static about one video; `frame(t)` renders frame t (uint8, size x size)."""

    def __init__(self, plan: VideoPlan):
        self.plan = plan
        st = plan.settings
        self.k = k = plan.size / REFERENCE_SIZE
        self.geometry = geo = plan.geometry()
        self.n_depth, self.n_angle = geo.n_depth, geo.n_angle
        self.margin = int(math.ceil(st.sliding_px * k + 3))
        self.width = self.n_angle + 2 * self.margin
        self.rows = np.arange(self.n_depth, dtype=np.float32)[:, None]
        depth = self.rows / (self.n_depth - 1)

        # pleural line at rest: between concentric with the probe face and a straight line
        theta = geo.angles()
        r_pleura = geo.radius_of_row(st.pleura_depth * (geo.n_depth - 1))
        rows_pleura = geo.row_of_radius(r_pleura / np.cos(theta) ** st.pleura_flatness)
        layout_rng = rng_for(plan.seed, *plan.key, 0)
        self.layout: Layout = draw_layout(layout_rng, rows_pleura, self.n_depth, st.wall_echo, k)
        self.findings: list[Findings] = [
            draw_findings(
                rng_for(plan.seed, *plan.key, 1, i), seg.severity, self.layout, self.margin, st.lung_haze, k
            )
            for i, seg in enumerate(plan.segments)
        ]
        # A-lines: reverberations of the (resting) pleura at 2, 3, 4, 5 times its depth
        self.a_lines = np.zeros((self.n_depth, self.n_angle), np.float32)
        for m in range(4):
            a_rows = (m + 2) * self.layout.pleura_rows[None, :]
            self.a_lines += A_LINE_DECAY**m * np.exp(
                -0.5 * ((self.rows - a_rows) / ((1.0 + 0.4 * m) * k)) ** 2
            )
        self.b_profile = (np.exp(0.7 * st.attenuation * depth) * (1 - 0.25 * depth)).astype(np.float32)
        cols = np.linspace(-1, 1, self.n_angle, dtype=np.float32)[None, :]
        # residual depth attenuation (imperfect TGC) and slight darkening towards the fan edges
        self.attenuation = (np.exp(-st.attenuation * depth) * (1 - 0.2 * cols**4)).astype(np.float32)
        mean_sev = float(np.mean([f.severity for f in self.findings]))
        self.sliding = st.sliding_px * k * (1 - 0.6 * mean_sev)
        self.resp_phase = float(rng_for(plan.seed, *plan.key, 4).uniform(0, 2 * math.pi))
        # speckle: grain per patient; normalise so the blurred complex field has unit variance
        self._sig = (st.speckle_axial * k, st.speckle_lateral * k)
        delta = np.zeros((41, 41), np.float32)
        delta[20, 20] = 1
        self._speckle_norm = 1 / math.sqrt(float((self._blur(delta) ** 2).sum()))
        self._keys: dict[tuple[int, int], np.ndarray] = {}
        self._noise_block: tuple[int, np.ndarray | None] = (-1, None)
        self._frames_per_key = {
            0: max(1, round(WALL_DECORRELATION_S * plan.fps)),
            1: max(1, round(LUNG_DECORRELATION_S * plan.fps)),
        }

    # --- time ----------------------------------------------------------------------------------
    def breath(self, t: int) -> float:
        """Respiratory phase angle at frame t."""
        return 2 * math.pi * t / (self.plan.settings.resp_period_s * self.plan.fps) + self.resp_phase

    def shift(self, t: int) -> float:
        """Lateral lung displacement at frame t, polar columns (lung sliding)."""
        return self.sliding * math.sin(self.breath(t))

    def segment_weights(self, t: int) -> list[float]:
        """Blend weight of each segment's findings at frame t (2-frame cross-fade at a score change)."""
        segs = self.plan.segments
        if len(segs) == 1:
            return [1.0]
        tc = segs[1].start
        w = {tc - 1: 0.25, tc: 0.75}.get(t, 0.0 if t < tc else 1.0)
        return [1 - w, w]

    # --- speckle -------------------------------------------------------------------------------
    def _blur(self, a: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(a, (0, 0), sigmaX=self._sig[1], sigmaY=self._sig[0])

    def _key_field(self, layer: int, idx: int) -> np.ndarray:
        key = (layer, idx)
        if key not in self._keys:
            cols = self.n_angle if layer == 0 else self.width
            rng = rng_for(self.plan.seed, *self.plan.key, 2, layer, idx)
            white = rng.standard_normal((2, self.n_depth, cols), dtype=np.float32)
            self._keys[key] = np.stack([self._blur(w) for w in white]) * np.float32(self._speckle_norm)
        return self._keys[key]

    def speckle(self, layer: int, t: int) -> np.ndarray:
        """Speckle envelope (mean 1) of layer 0 (chest wall, fan columns) or 1 (lung, canvas), frame t."""
        n = self._frames_per_key[layer]
        idx, tau = divmod(t, n)
        a = 0.5 * math.pi * tau / n
        z = math.cos(a) * self._key_field(layer, idx) + math.sin(a) * self._key_field(layer, idx + 1)
        c = self.plan.settings.speckle_contrast
        envelope = cv2.magnitude(z[0], z[1])  # Rayleigh, mean sqrt(pi / 2)
        return envelope * np.float32(c / math.sqrt(math.pi / 2)) + np.float32(1 - c)

    # --- composition ---------------------------------------------------------------------------
    def _lung_image(
        self, f: Findings, t: int, start: float, speckle_lung: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(chest wall echogenicity above the pleura, speckled pleura + lung below it) for findings f."""
        k, rows, lay = self.k, self.rows, self.layout
        n = self.n_angle
        p_t = lay.pleura_rows[None, :] + _crop(f.irregular, start, n)[None, :]
        below = _sigmoid((rows - p_t) / (0.6 * k))
        pleura = (
            f.pleura_amp
            * _crop(f.fragment, start, n)[None, :]
            * np.exp(-0.5 * ((rows - p_t) / f.pleura_sigma) ** 2)
        )
        # B-lines: radial bright bands, fading in and out with breathing, moving with the lung
        if f.n_b_lines:
            amp = f.b_amp * (1 - f.b_flicker * (0.5 + 0.5 * np.sin(self.breath(t) + f.b_phase)))
            xs = np.arange(self.width, dtype=np.float32)[None, :]
            bands = (amp[:, None] * np.exp(-0.5 * ((xs - f.b_pos[:, None]) / f.b_width[:, None]) ** 2)).sum(0)
            b_cols = _crop(bands.astype(np.float32), start, n)
        else:
            b_cols = np.zeros(n, np.float32)
        lung, cons_mask, cons_echo = _crop(np.stack([f.lung, f.cons_mask, f.cons_echo]), start, n)
        air = lung + b_cols[None, :] * self.b_profile
        content = air * (1 - cons_mask) + cons_echo * cons_mask
        if f.a_line_amp > 0:  # B-lines and consolidation erase A-lines
            erase = (f.a_line_amp * (1 - np.clip(b_cols / 0.4, 0, 1)))[None, :] * (1 - cons_mask)
            content += self.a_lines * erase
        wall = self.layout.wall * (1 - below)
        return wall, pleura * (0.5 + 0.5 * speckle_lung) + content * below * speckle_lung

    def polar(self, t: int) -> np.ndarray:
        """Echo intensity of frame t in polar coordinates (before display mapping), float32."""
        start = self.margin - self.shift(t)
        s_wall = self.speckle(0, t)
        s_lung = _crop(self.speckle(1, t), start, self.n_angle)
        img = None
        for f, w in zip(self.findings, self.segment_weights(t), strict=True):
            if w == 0:
                continue
            wall, lung = self._lung_image(f, t, start, s_lung)
            part = w * (wall * s_wall + lung)
            img = part if img is None else img + part
        lay = self.layout
        img = img * lay.shadow + lay.rib_cap * s_wall
        return img * self.attenuation

    def frame(self, t: int) -> np.ndarray:
        """Frame t as uint8 (size, size); black outside the fan."""
        if not 0 <= t < self.plan.n_frames:
            raise IndexError(f"frame {t} outside 0..{self.plan.n_frames - 1}")
        st = self.plan.settings
        shown = cv2.pow(np.maximum(self.polar(t) * np.float32(st.gain), 0), st.gamma)
        # soft knee instead of hard clipping: bright regions saturate gradually, as on a scanner
        over = np.maximum(shown - np.float32(KNEE), 0) * np.float32(1 / (1 - KNEE))
        shown = np.minimum(shown, np.float32(KNEE)) + over / (1 + over) * np.float32(1 - KNEE)
        img = self.geometry.to_cartesian(shown)
        img += self._noise(t)
        img[~self.geometry.mask] = 0
        return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)

    def _noise(self, t: int) -> np.ndarray:
        """Electronic noise of frame t (small, white), drawn per block of frames for speed."""
        block, i = divmod(t, NOISE_BLOCK)
        if self._noise_block[0] != block:
            n = min(NOISE_BLOCK, self.plan.n_frames - block * NOISE_BLOCK)
            rng = rng_for(self.plan.seed, *self.plan.key, 3, block)
            noise = rng.random((n, self.plan.size, self.plan.size), dtype=np.float32) - np.float32(0.5)
            # uniform noise scaled to standard deviation `noise` (cheaper than Gaussian, same look)
            self._noise_block = (block, noise * np.float32(self.plan.settings.noise * math.sqrt(12)))
        return self._noise_block[1][i]


def render_video(plan: VideoPlan) -> np.ndarray:
    """All frames of `plan` as uint8 (n_frames, size, size) grayscale."""
    r = VideoRenderer(plan)
    return np.stack([r.frame(t) for t in range(plan.n_frames)])


def render_frame(plan: VideoPlan, t: int) -> np.ndarray:
    """Frame t of `plan`, uint8 (size, size); identical to `render_video(plan)[t]`."""
    return VideoRenderer(plan).frame(t)


def with_doppler_box(frames: np.ndarray, plan: VideoPlan) -> np.ndarray:
    """uint8 (n, size, size) grey frames -> (n, size, size, 3) RGB with a colour Doppler box: inside
    the fan, a window where a red and a blue flow blob (towards / away from the probe) cover the grey
    image and move from frame to frame, as a colour-flow acquisition shows them."""
    n, size = len(frames), plan.size
    rgb = np.repeat(frames[..., None], 3, axis=3)
    inside = plan.geometry().mask
    rows, cols = np.nonzero(inside)
    box = max(8, size // 5)
    top = min(int(np.percentile(rows, 35)), size - box)
    left = min(int(np.percentile(cols, 35)), size - box)
    mask = inside[top : top + box, left : left + box, None]
    yy, xx = np.mgrid[0:box, 0:box].astype(np.float32)
    centres = rng_for(plan.seed, *plan.key, 2).uniform(0.2 * box, 0.8 * box, size=(2, 2))
    colours = np.array([[230.0, 40.0, 30.0], [30.0, 60.0, 230.0]], np.float32)
    for t in range(n):
        region = rgb[t, top : top + box, left : left + box]
        window = region.astype(np.float32)
        for k, (cy, cx) in enumerate(centres):
            cy = cy + 0.15 * box * math.sin(2 * math.pi * (t / max(n, 1) + k / 2))
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (0.12 * box) ** 2))[..., None]
            window = window * (1 - blob) + colours[k] * blob
        region[:] = np.where(mask, window.round().clip(0, 255).astype(np.uint8), region)
    return rgb
