"""The package's shape: every import points down the layers the README lists, and a new mixer is one
Python file plus one YAML file."""

import ast
import re
import sys
from pathlib import Path

import torch
from helpers import ROOT, compose_cfg, read_metrics

import shunted_lab.models.mixers as mixers
from shunted_lab.models.mixers import base
from shunted_lab.training import train

PACKAGE = ROOT / "src" / "shunted_lab"
# Lowest first. A module may import from a lower layer, or from its own part (package or module).
LAYERS = [
    {"files", "wandb_env", "exits", "run_dirs"},
    {"config"},
    {"models", "data"},
    {"analysis"},
    {"training"},
    {"sweeps"},
    {"checkpoints"},
    {"bench", "report"},
]
LAYER = {part: i for i, parts in enumerate(LAYERS) for part in parts}


def part_of(module: str) -> str:
    """`shunted_lab.training.fit` -> `training`."""
    return module.split(".")[1]


def imported(path: Path) -> set[str]:
    """The shunted_lab modules a file imports, anywhere in it (function-level imports included)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base_module = package
            for _ in range(node.level - 1):
                base_module = base_module.rsplit(".", 1)[0]
            target = f"{base_module}.{node.module}" if node.level and node.module else node.module or base_module
            names = [f"{target}.{a.name}" for a in node.names] if node.module is None else [target]
            found.update(names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("shunted_lab.")}


def test_every_import_points_down_the_layers():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "__init__.py":
            continue  # registers the models with timm on `import shunted_lab`
        source = part_of(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        assert source in LAYER, f"{path.relative_to(ROOT)} is in no layer of the README's list"
        for target in imported(path):
            part = part_of(target)
            if part != source and LAYER[part] >= LAYER[source]:
                upward.append(f"{path.relative_to(ROOT)} imports {target}")
    assert upward == []


def public_names(path: Path) -> set[str]:
    """The classes, functions and constants a module defines at its top level, `_private` ones aside."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_") and n not in ("log", "main")}  # main: each CLI's entry


def test_no_two_modules_define_the_same_public_name():
    """One name, one meaning: `MIXERS` or `label` defined twice means two things to a reader."""
    where: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "reference.py":
            continue  # the official release's formulation, kept with its own class names on purpose
        for name in public_names(path):
            where.setdefault(name, []).append(str(path.relative_to(PACKAGE)))
    assert {name: paths for name, paths in where.items() if len(paths) > 1} == {}


def test_the_readme_lists_the_layers_in_this_order():
    readme = (ROOT / "README.md").read_text()
    listed = readme.split("`tests/test_layout.py`):", 1)[1].split("`run.py` last", 1)[0]
    order = [LAYER[name] for name in re.findall(r"`(\w+)`", listed)]
    assert order == sorted(order) and set(re.findall(r"`(\w+)`", listed)) == set(LAYER)


def readme_mixer() -> str:
    section = (ROOT / "README.md").read_text().split("## Add a mixer", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S)[1]


def test_a_new_mixer_is_one_python_file_and_one_yaml(tmp_path, monkeypatch):
    # The README's example, dropped into a folder of the mixers package, with its config in a folder of
    # its own on Hydra's search path: no other file changes.
    (tmp_path / "mixers").mkdir()
    (tmp_path / "mixers" / "row.py").write_text(readme_mixer())
    (tmp_path / "conf" / "attention").mkdir(parents=True)
    (tmp_path / "conf" / "attention" / "row.yaml").write_text("name: row\nkwargs: {}\n")
    monkeypatch.setattr(mixers, "__path__", [*mixers.__path__, str(tmp_path / "mixers")])
    monkeypatch.setattr(base, "MIXERS", dict(base.MIXERS))
    try:
        mixers.discover_mixers()
        assert "row" in base.MIXERS
        searchpath = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
        cfg = compose_cfg(tmp_path, searchpath, "attention=row")  # 4 optimizer steps
        train(cfg)
    finally:
        sys.modules.pop("shunted_lab.models.mixers.row", None)
    metrics = read_metrics(cfg)
    assert metrics["attention"] == "row" and 0.0 <= metrics["val/top1"] <= 1.0
    weights = torch.load(metrics["best_checkpoint"], weights_only=True)["state_dict"]
    assert "model.stages.0.blocks.0.attn.qkv.weight" in weights  # TokenMixer's projections, in the row mixer
