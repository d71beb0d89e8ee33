"""Attention statistics reduced while each block runs: nothing of size N x N outlives its block.

Per mixer call: the mean attention distance of every head in input pixels, and, for the images
to draw, the row of one query point spread over the key grid.
"""

import torch

from ..models.attention import AttentionMap


def stage_of(mixer_name: str) -> int:
    """`stages.<i>.blocks.<j>.attn` -> i."""
    return int(mixer_name.split(".")[1])


class AttentionReducer:
    """`keep` for record_attention. queries: (show, 2) input pixels (row, column) for the first images.

    Images are counted per mixer across calls: the model runs over the images a batch at a time.
    """

    def __init__(self, strides: list[int], queries: torch.Tensor):
        self.strides = strides
        self.queries = queries
        self.seen: dict[tuple[str, str], int] = {}

    def __call__(self, name: str, amap: AttentionMap) -> dict:
        stride = self.strides[stage_of(name)]
        kept = {
            "group": amap.group,
            "images": amap.weights.shape[0],
            "distance_px": amap.mean_distance() * stride,
            "key_hw": amap.key_hw,
            "key_stride_px": tuple(s * stride for s in amap.key_stride),
        }
        first = self.seen.get((name, amap.group), 0)
        self.seen[name, amap.group] = first + amap.weights.shape[0]
        kept["rows"] = []  # (image index, heads x Hk x Wk)
        for b, (y, x) in enumerate(self.queries[first : first + amap.weights.shape[0]].tolist()):
            r, c = min(int(y) // stride, amap.hw[0] - 1), min(int(x) // stride, amap.hw[1] - 1)
            kept["rows"].append((first + b, amap.key_grid(r * amap.hw[1] + c)[b]))
        return kept
