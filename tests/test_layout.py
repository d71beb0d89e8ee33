"""The package's shape: every import points down the layers the README lists, and a new mixer is one
Python file plus one YAML file."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import torch
from helpers import ROOT, compose_cfg, read_metrics

import shunted_lab.models.mixers as mixers
from shunted_lab.models.mixers import base
from shunted_lab.training.fit import train

PACKAGE = ROOT / "src" / "shunted_lab"
# Lowest first. A module may import from a lower layer, or from its own part (package or module).
LAYERS = [
    {"files", "wandb_env", "cpu_allocator", "exits", "run_dirs"},
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


def test_the_image_folder_datamodule_names_no_format_and_no_pipeline():
    """A new storage format is a reader (data/readers/) and a new pipeline a class in pipelines.py: the
    datamodule holds one of each and branches on neither."""
    from shunted_lab.data.pipelines import PIPELINES
    from shunted_lab.data.readers import FORMATS

    tree = ast.parse((PACKAGE / "data" / "imagefolder.py").read_text())
    values = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert values & {*FORMATS, *PIPELINES} == set()
    imports = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imports >= {"pipelines", "readers"} and not [m for m in imports if m.startswith(("device", "readers."))]


def test_the_training_step_reads_without_the_graph_engine():
    """The plain step is `criterion(self(x), targets)` in the module itself; the graph mode is one
    fork to its adapter, and none of the engine's names appears in the step."""
    import inspect

    from shunted_lab.training.graphs import engine
    from shunted_lab.training.recipe import RecipeModule

    step = ast.parse(inspect.getsource(RecipeModule.training_step).strip())
    names = {n.id for n in ast.walk(step) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(step) if isinstance(n, ast.Attribute)
    }
    engine_names = public_names(Path(engine.__file__)) | {"optimizers", "lr_schedulers", "backward"}
    assert names & engine_names == set()
    fork = next(n for n in ast.walk(step) if isinstance(n, ast.If))
    assert ast.unparse(fork.test) == "self.automatic_optimization"
    assert ast.unparse(fork.body[0]) == "loss = self.criterion(self(x), targets)"


def test_the_graph_engine_runs_without_lightning():
    """bench/ drives the engine on its own: the engine imports neither Lightning nor the rest of training/."""
    tree = ast.parse((PACKAGE / "training" / "graphs" / "engine.py").read_text())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {(("." * n.level) + (n.module or "")) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not [m for m in modules if m.startswith(("lightning", "pytorch_lightning", "."))]
    # Nor do the packages above it: each bench entry's process imports the engine and no Lightning.
    probe = "import sys, shunted_lab.bench.measure; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert "'torch'" in loaded and "lightning" not in loaded and "torchmetrics" not in loaded


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
