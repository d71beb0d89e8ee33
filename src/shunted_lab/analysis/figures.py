"""The analysis's PNGs: attention maps, ERFs, Grad-CAM and mean attention distance."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..data.base import displayable  # noqa: E402


def attention_figure(image: torch.Tensor, query: tuple[float, float], stages: list[list[dict]], path: Path) -> None:
    """One row per stage (its last block): the image with the query, then each head's weights on the image.

    `stages[i]` holds that block's groups (shunted: coarse then fine), each with `rows` (heads, Hk, Wk)
    for this image and the key cell size in pixels.
    """
    columns = 1 + max(sum(g["rows"].shape[0] for g in groups) for groups in stages)
    fig, axes = plt.subplots(len(stages), columns, figsize=(1.6 * columns, 1.7 * len(stages)), squeeze=False)
    picture = displayable(image)
    H, W = picture.shape[:2]
    for i, groups in enumerate(stages):
        axes[i, 0].imshow(picture)
        axes[i, 0].scatter([query[1]], [query[0]], marker="x", c="red", s=40)
        axes[i, 0].set_title(f"stage {i + 1}", fontsize=8)
        col = 1
        for g in groups:
            sh, sw = g["key_stride_px"]
            for weights in g["rows"]:
                ax = axes[i, col]
                ax.imshow(picture, alpha=0.5)
                Hk, Wk = weights.shape
                # Each key drawn over the input pixels it aggregates (rounded-down maps leave a margin).
                ax.imshow(weights.numpy(), cmap="inferno", alpha=0.7, extent=(0, Wk * sw, Hk * sh, 0))
                ax.set_xlim(0, W)
                ax.set_ylim(H, 0)
                ax.set_title(f"head {col - 1} {g['group']}".strip(), fontsize=7)
                col += 1
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def erf_figure(maps: list[torch.Tensor], areas: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, len(maps), figsize=(2.6 * len(maps), 2.8), squeeze=False)
    for i, (erf, area) in enumerate(zip(maps, areas, strict=True)):
        axes[0, i].imshow(np.log10(1 + erf.numpy() / max(float(erf.max()), 1e-30) * 1e3), cmap="viridis")
        axes[0, i].set_title(f"stage {i + 1}: 50% in {area['0.5']['side_px']} px", fontsize=8)
        axes[0, i].axis("off")
    fig.suptitle("effective receptive field of the central location (log scale)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def gradcam_figure(images, cams, predicted, labels, confidence, class_names, path: Path) -> None:
    n = len(images)
    columns = min(n, 4)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k in range(n):
        ax = axes.flat[k]
        ax.imshow(displayable(images[k]))
        ax.imshow(cams[k].numpy(), cmap="jet", alpha=0.45)
        name = lambda c: "?" if c < 0 else class_names[c] if class_names else str(c)  # noqa: E731
        wrong = " (wrong)" if 0 <= int(labels[k]) != int(predicted[k]) else ""
        ax.set_title(
            f"pred {name(int(predicted[k]))} {float(confidence[k]):.2f}{wrong}\ntrue {name(int(labels[k]))}", fontsize=7
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def distance_figure(distances: dict[str, dict[str, list[float]]], path: Path) -> None:
    """Per block (x), each head's mean attention distance (y), coloured by head group."""
    fig, ax = plt.subplots(figsize=(7, 4))
    groups = sorted({g for per_group in distances.values() for g in per_group}, key=lambda g: (len(g), g))
    colours = {g: f"C{i}" for i, g in enumerate(groups)}
    for x, per_group in enumerate(distances.values()):
        for group, heads in per_group.items():
            ax.scatter([x] * len(heads), heads, c=colours[group], s=14, label=group or "all heads")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize=8)
    ax.set_xticks(
        range(len(distances)),
        [b.replace("stages.", "s").replace(".blocks.", ".b").removesuffix(".attn") for b in distances],
        rotation=60,
        fontsize=7,
    )
    ax.set(xlabel="block", ylabel="mean attention distance (px)", title="how far each head looks")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
