"""Fields derived from a solver's frames (numpy only: the data venv and the project's)."""
from __future__ import annotations

import numpy as np


def vorticity_magnitude(vx: np.ndarray, vy: np.ndarray, vz: np.ndarray, h: float
                        ) -> np.ndarray:
    """|curl v| by central differences (one-sided at the faces) per step: [T, Z, Y, X]."""
    out = []
    for t in range(vx.shape[0]):
        dx = [np.gradient(c[t].astype(np.float64), h, axis=(0, 1, 2)) for c in (vx, vy, vz)]
        # dx[i][a]: d(component i)/d(axis a), axes (z, y, x)
        w = np.stack([dx[2][1] - dx[1][0], dx[0][0] - dx[2][2], dx[1][2] - dx[0][1]])
        out.append(np.sqrt((w ** 2).sum(0)))
    return np.stack(out).astype(np.float32)
