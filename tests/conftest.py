from pathlib import Path

import pytest
import torch

import shunted_lab  # noqa: F401  (registers the models with timm)

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def official_key_listing(name: str) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of a released checkpoint, from ../shared/reference/<name>_state_dict.tsv."""
    rows = (REFERENCE_DIR / f"{name}_state_dict.tsv").read_text().splitlines()[1:]
    shapes = {}
    for row in rows:
        key, shape = row.split("\t")
        shapes[key] = () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))
    return shapes
