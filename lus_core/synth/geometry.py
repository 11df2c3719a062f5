"""Convex-probe sector (fan) geometry: where a polar (depth x angle) image lands in the frame.

Everything in the synthetic generator is rendered in *polar* coordinates first: an array of
`n_depth` rows (row 0 = probe surface, last row = deepest echo) by `n_angle` columns (first
column = left edge of the fan). In that space the pleural line and A-lines are (nearly)
horizontal, B-lines and rib shadows are vertical, which keeps every artefact a cheap 1-D
profile. `FanGeometry.to_cartesian` then warps the polar image into the square video frame
with one `cv2.remap`; pixels outside the fan stay exactly 0 (black background).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass(frozen=True)
class FanGeometry:
    """A convex-probe sector inside a `size` x `size` frame.

    half_angle: half the field of view, radians (probe width).
    probe_radius: radius of the probe face relative to the deepest radius (0 < r < 1); the
        sector spans radii [probe_radius, 1] around a virtual apex above the frame.
    margin: black border kept around the fan, pixels.
    The fan is scaled to the largest size that fits, centred horizontally, top-aligned.
    """

    size: int
    half_angle: float
    probe_radius: float
    margin: int = 2
    n_depth: int = 0  # polar rows; 0 -> size
    n_angle: int = 0  # polar columns; 0 -> size
    _maps: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 < self.half_angle < math.pi / 2:
            raise ValueError(f"half_angle must be in (0, pi/2), got {self.half_angle}")
        if not 0 < self.probe_radius < 1:
            raise ValueError(f"probe_radius must be in (0, 1), got {self.probe_radius}")
        object.__setattr__(self, "n_depth", self.n_depth or self.size)
        object.__setattr__(self, "n_angle", self.n_angle or self.size)
        object.__setattr__(self, "_maps", self._build_maps())

    # --- geometry in pixels -------------------------------------------------------------
    @property
    def scale(self) -> float:
        """Deepest radius in pixels."""
        s, rho = math.sin(self.half_angle), self.probe_radius
        width, height = 2 * s, 1 - rho * math.cos(self.half_angle)
        return (self.size - 2 * self.margin) / max(width, height)

    @property
    def apex(self) -> tuple[float, float]:
        """(x, y) of the virtual apex in pixel coordinates (y < 0: above the frame)."""
        x = (self.size - 1) / 2
        y = self.margin - self.probe_radius * math.cos(self.half_angle) * self.scale
        return x, y

    def angles(self) -> np.ndarray:
        """Beam angle (radians, 0 = straight down) of each polar column."""
        return np.linspace(-self.half_angle, self.half_angle, self.n_angle, dtype=np.float64)

    def radius_of_row(self, row: np.ndarray | float) -> np.ndarray | float:
        """Radius (units of the deepest radius) of polar row(s)."""
        return self.probe_radius + (1 - self.probe_radius) * np.asarray(row) / (self.n_depth - 1)

    def row_of_radius(self, radius: np.ndarray | float) -> np.ndarray | float:
        """Polar row of radius/radii (inverse of `radius_of_row`)."""
        return (np.asarray(radius) - self.probe_radius) / (1 - self.probe_radius) * (self.n_depth - 1)

    def _build_maps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = self.size
        ax, ay = self.apex
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
        dx, dy = xx - ax, yy - ay
        r = np.hypot(dx, dy) / self.scale
        theta = np.arctan2(dx, dy)
        row = self.row_of_radius(r)
        col = (theta + self.half_angle) / (2 * self.half_angle) * (self.n_angle - 1)
        inside = (row >= 0) & (row <= self.n_depth - 1) & (col >= 0) & (col <= self.n_angle - 1)
        # far outside -> sampled from the constant 0 border, so the background is exactly black
        map_x = np.where(inside, col, -10.0).astype(np.float32)
        map_y = np.where(inside, row, -10.0).astype(np.float32)
        return map_x, map_y, inside

    @property
    def mask(self) -> np.ndarray:
        """bool (size, size): pixels inside the fan."""
        return self._maps[2]

    def to_cartesian(self, polar: np.ndarray) -> np.ndarray:
        """Warp a (n_depth, n_angle) float32 polar image into the (size, size) frame."""
        if polar.shape != (self.n_depth, self.n_angle):
            raise ValueError(f"polar image must be {(self.n_depth, self.n_angle)}, got {polar.shape}")
        map_x, map_y, _ = self._maps
        return cv2.remap(
            polar.astype(np.float32, copy=False),
            map_x,
            map_y,
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0.0,
        )
