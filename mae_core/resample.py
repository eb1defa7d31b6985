"""Bicubic resampling of a learned position-embedding grid to another grid size, in numpy: the function of
torch.nn.functional.interpolate(mode='bicubic', align_corners=False) (cubic convolution with a = -0.75, borders
clamped), which timm's resample_abs_pos_embed uses. Downsampling is not antialiased (timm's default antialiases)."""

import numpy as np


def _cubic_weights(t, a=-0.75):
    """The four cubic-convolution weights of the samples at offsets -1, 0, 1, 2 for fractional positions t."""
    distances = np.stack([t + 1, t, 1 - t, 2 - t], axis=-1)  # (..., 4)
    near = ((a + 2) * distances - (a + 3)) * distances * distances + 1  # |x| <= 1
    far = ((a * distances - 5 * a) * distances + 8 * a) * distances - 4 * a  # 1 < |x| < 2
    return np.where(distances <= 1, near, far)


def _matrix(old, new):
    """(new, old) interpolation matrix along one axis."""
    source = (np.arange(new, dtype=np.float64) + 0.5) * (old / new) - 0.5
    first = np.floor(source).astype(int)
    weights = _cubic_weights(source - first)
    matrix = np.zeros((new, old))
    for offset in range(4):
        np.add.at(matrix, (np.arange(new), np.clip(first - 1 + offset, 0, old - 1)), weights[:, offset])
    return matrix


def resample_grid(grid, size):
    """grid (h, w, d) -> (size[0], size[1], d), bicubically, computed in float64 and returned in grid's dtype."""
    rows, columns = _matrix(grid.shape[0], size[0]), _matrix(grid.shape[1], size[1])
    out = np.einsum('ih,hwd,jw->ijd', rows, np.asarray(grid, np.float64), columns)
    return out.astype(grid.dtype)
