"""Run every analysis on a set of images and write its files (the package docstring lists them)."""

import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from ..files import write_json
from ..models.attention import RecordableAttention, record_attention
from . import figures
from .attention import AttentionReducer, stage_of
from .cam import grad_cam
from .erf import SHARES, area_ratio, effective_receptive_fields, input_centre
from .inputs import AnalysisInputs, from_folder, from_split


def attention_statistics(model: nn.Module, inputs: AnalysisInputs, show: int, batch_size: int) -> tuple[dict, dict]:
    """({mixer: {group: per-head mean distance px}}, {mixer: [(image, one group's rows)]} for the drawn images)."""
    strides = [f["reduction"] for f in model.feature_info]
    reducer = AttentionReducer(strides, inputs.queries[:show])
    sums: dict[str, dict[str, list]] = {}
    drawn: dict[str, list] = {}
    with torch.no_grad(), record_attention(model, keep=reducer) as maps:
        for start in range(0, len(inputs.images), batch_size):
            model(inputs.images[start : start + batch_size])
            for name, calls in maps.items():
                for kept in calls:
                    acc = sums.setdefault(name, {}).setdefault(kept["group"], [0.0, 0])
                    acc[0] = acc[0] + kept["distance_px"] * kept["images"]
                    acc[1] += kept["images"]
                    drawn.setdefault(name, []).extend(
                        (image, {"group": kept["group"], "rows": rows, "key_stride_px": kept["key_stride_px"]})
                        for image, rows in kept["rows"]
                    )
            maps.clear()  # each batch's reductions are summed: memory stays that of one batch
    distances = {name: {g: (s / n).tolist() for g, (s, n) in groups.items()} for name, groups in sums.items()}
    return distances, drawn


def draw_attention(inputs: AnalysisInputs, drawn: dict, show: int, out: Path) -> list[Path]:
    """One figure per drawn image: each stage's last block, every head."""
    last_block = {stage_of(name): name for name in drawn}  # names come in model order: the last one stays
    paths = []
    for image in range(min(show, len(inputs.images))):
        stages = [
            [group for index, group in drawn[last_block[stage]] if index == image] for stage in sorted(last_block)
        ]
        path = out / f"attention_{image}.png"
        figures.attention_figure(inputs.images[image].cpu(), tuple(inputs.queries[image].tolist()), stages, path)
        paths.append(path)
    return paths


def erf_statistics(model: nn.Module, images: torch.Tensor, batch_size: int) -> tuple[list[torch.Tensor], list[dict]]:
    """Per stage: the ERF map (mean over images) and its area ratios {share: {area_ratio, side_px}}."""
    maps = None
    for start in range(0, len(images), batch_size):
        batch = effective_receptive_fields(
            lambda x: model.forward_intermediates(x, intermediates_only=True), images[start : start + batch_size]
        )
        maps = batch if maps is None else [m + b for m, b in zip(maps, batch, strict=True)]
    maps = [m.cpu() / len(images) for m in maps]
    H, W = images.shape[-2:]
    areas = []
    for m, info in zip(maps, model.feature_info, strict=True):
        centre = input_centre((H // info["reduction"], W // info["reduction"]), (H, W))
        areas.append(
            {str(s): dict(zip(("area_ratio", "side_px"), area_ratio(m, centre, s), strict=True)) for s in SHARES}
        )
    return maps, areas


def summary_columns(distances: dict, areas: list[dict]) -> dict[str, float]:
    summary = {}
    by_stage: dict[int, dict[str, list[float]]] = {}
    for name, groups in distances.items():
        for group, heads in groups.items():
            by_stage.setdefault(stage_of(name), {}).setdefault(group, []).extend(heads)
    for stage, groups in sorted(by_stage.items()):
        every = [d for heads in groups.values() for d in heads]
        summary[f"mad_px_s{stage + 1}"] = float(np.mean(every))
        if len(groups) > 1:
            for group, heads in groups.items():
                summary[f"mad_px_s{stage + 1}_{group.replace(' ', '')}"] = float(np.mean(heads))
    for stage, area in enumerate(areas):
        for share, value in area.items():
            summary[f"erf{round(float(share) * 100)}_s{stage + 1}"] = value["area_ratio"]
    return summary


def analyze(
    model: nn.Module,
    inputs: AnalysisInputs,
    out: Path,
    show: int = 4,
    batch_size: int = 16,
    gradcam: bool = True,
    **record,
) -> dict:
    """Every analysis on `inputs` (Grad-CAM only with `gradcam`: it needs class scores per image); writes
    the files listed in the module docstring; returns analysis.json's dict."""
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    shown_cpu = inputs.images[: 2 * show]
    device = next(model.parameters()).device
    inputs = AnalysisInputs(**{**vars(inputs), "images": inputs.images.to(device)})
    recordable = any(isinstance(m, RecordableAttention) for m in model.modules())
    distances, drawn = attention_statistics(model, inputs, show, batch_size) if recordable else ({}, {})
    pngs = draw_attention(inputs, drawn, show, out) if drawn else []

    maps, areas = erf_statistics(model, inputs.images, batch_size)
    np.savez_compressed(out / "erf.npz", **{f"stage{i + 1}": m.numpy() for i, m in enumerate(maps)})
    figures.erf_figure(maps, areas, out / "erf.png")
    pngs.append(out / "erf.png")

    shown = slice(0, len(shown_cpu))
    predictions = []
    if gradcam:
        cams, predicted, confidence = (t.cpu() for t in grad_cam(model, inputs.images[shown]))
        figures.gradcam_figure(
            shown_cpu, cams, predicted, inputs.labels[shown], confidence, inputs.class_names, out / "gradcam.png"
        )
        pngs.append(out / "gradcam.png")
        predictions = [
            {"predicted": int(p), "label": int(y), "confidence": float(c)}
            for p, y, c in zip(predicted, inputs.labels[shown], confidence, strict=True)
        ]
    if distances:
        figures.distance_figure(distances, out / "attention_distance.png")
        pngs.append(out / "attention_distance.png")

    result = {
        **record,
        "images": len(inputs.images),
        "query_points": inputs.query_kind,
        "summary": summary_columns(distances, areas),
        "mean_attention_distance_px": distances,
        "erf": {f"stage{i + 1}": area for i, area in enumerate(areas)},
        "gradcam_predictions": predictions,
        "figures": [p.name for p in pngs],
        "seconds": time.perf_counter() - start,
    }
    write_json(out / "analysis.json", result)
    return result


def analyze_configured(model: nn.Module, datamodule, cfg: DictConfig, out: Path, **record) -> dict:
    """`analyze` on the images the `analysis` config names (conf/config.yaml). A model with a
    `backbone` (a segmentation model) is analysed through its backbone: attention and ERF, no
    Grad-CAM, which needs the class scores of a classifier."""
    if cfg.images:
        inputs = from_folder(Path(cfg.images), datamodule, cfg.num_images)
    else:
        inputs = from_split(datamodule, cfg.split, cfg.num_images)
    backbone = getattr(model, "backbone", None)
    target = backbone if backbone is not None else model
    return analyze(target, inputs, out, show=cfg.show, batch_size=cfg.batch_size, gradcam=backbone is None, **record)
