"""What the command line answers before anything trains: help, the config, and one-line errors, each
in a second or two because none of them loads torch."""

import json
import os
import subprocess
import sys

from helpers import ROOT

from shunted_lab.config import unknown_key

# Each command in turn, in one interpreter (run.py as __main__, as `python run.py` runs it): its exit
# code, what it printed, and whether torch was imported by then.
DRIVER = r"""
import contextlib, io, json, runpy, sys
from hydra.core.global_hydra import GlobalHydra
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    sys.argv = argv
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(argv[0], run_name="__main__") if argv[0].endswith(".py") else runpy.run_module(
                argv[0], run_name="__main__", alter_sys=True)
        except SystemExit as e:
            code = e.code
    GlobalHydra.instance().clear()
    results.append({"code": code, "out": out.getvalue(), "err": err.getvalue(), "torch": "torch" in sys.modules})
print(json.dumps(results))
"""


def test_help_config_and_errors_answer_without_loading_torch(tmp_path):
    run = [str(ROOT / "run.py"), f"paths.root_dir={tmp_path}"]
    commands = {
        "help": [run[0], "--help"],
        "cfg": [*run, "--cfg", "job"],
        "unknown option": [*run, "attention=transformer"],
        "unknown sweep option": [*run, "-m", "mlp=plain,dwconvv"],
        "config rule": [*run, "data.batch_size=-4", "logger=csv"],
        "report help": ["shunted_lab.report", "--help"],
        "unknown key": [*run, "data.batchsize=32"],
        "key of another preset": [*run, "data.format=shards"],
        "resumed from a bad last.ckpt": [*run, "logger=csv", f"hydra.run.dir={tmp_path}/interrupted"],  # last
    }
    # A run stopped before its end, whose last checkpoint is unreadable: the rerun resumes from it.
    last = tmp_path / "interrupted" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"PK\x03\x04 not really a zip")
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(list(commands.values()))],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = dict(zip(commands, json.loads(proc.stdout.strip().splitlines()[-1]), strict=True))
    for name, answer in answers.items():  # the last one reads a checkpoint, which needs torch
        assert not answer["torch"] or name == "resumed from a bad last.ckpt", f"{name} imported torch"

    help_page = answers["help"]
    assert help_page["code"] in (0, None) and help_page["out"].startswith("shunted-lab: which token mixer")
    assert "attention: pvt, shunted, swin, vit" in help_page["out"] and "python run.py -m" in help_page["out"]
    assert "logs/runs/" in help_page["out"] and len(help_page["out"].splitlines()) < 50  # not the whole config
    assert answers["cfg"]["code"] in (0, None) and "attention:" in answers["cfg"]["out"]
    assert "_target_: shunted_lab.data.ShapesData" in answers["cfg"]["out"]

    for name, option in (("unknown option", "attention=transformer"), ("unknown sweep option", "mlp=dwconvv")):
        answer = answers[name]
        assert answer["code"] == 2 and answer["err"].strip().splitlines() == [answer["err"].strip()]  # one line
        assert answer["err"].startswith(f"config error: {option} is not an option of ")
    assert "expected one of ['pvt', 'shunted', 'swin', 'vit']" in answers["unknown option"]["err"]

    rule = answers["config rule"]
    errors = [line for line in (rule["out"] + rule["err"]).splitlines() if "config error" in line]
    assert rule["code"] == 2 and len(errors) == 1 and "data.batch_size=-4 is not allowed" in errors[0]
    assert not list((tmp_path / "logs" / "runs").iterdir())  # Hydra's record of it is removed

    report_help = answers["report help"]
    assert report_help["code"] == 0 and "sweep_dir" in report_help["out"] and "paired by seed" in report_help["out"]
    assert "Holm-adjusted" in report_help["out"] and "--seeds-for" in report_help["out"]
    for name, line in (
        ("unknown key", "config error: data.batchsize is not a key of data; did you mean data.batch_size?"),
        ("key of another preset", "config error: data.format is not a key of data=shapes; the data presets that"),
    ):
        assert answers[name]["code"] == 2 and answers[name]["err"].startswith(line), answers[name]
        assert len(answers[name]["err"].strip().splitlines()) == 1

    # run.py's one check of the config comes after the resume pointed ckpt_path at last.ckpt.
    resumed = answers["resumed from a bad last.ckpt"]
    errors = [line for line in (resumed["out"] + resumed["err"]).splitlines() if "config error" in line]
    assert resumed["code"] == 2 and len(errors) == 1, resumed
    assert "ckpt_path: " in errors[0] and "last.ckpt is not a readable PyTorch checkpoint" in errors[0]
    assert last.is_file()  # nothing saved is lost


def test_a_mistyped_key_is_named_with_the_key_it_probably_meant():
    for typed, meant in (
        ("data.batchsize=3", "data.batch_size"),
        ("trainer.max_epoch=2", "trainer.max_epochs"),
        ("optim.weight_decy=0.1", "optim.weight_decay"),
        ("model.drop_path_rat=0.1", "model.drop_path_rate"),
        ("seeed=1", "seed"),
    ):
        key = typed.split("=")[0]
        assert (
            unknown_key([typed])
            == f"{key} is not a key of {key.rpartition('.')[0] or 'the config'}; did you mean {meant}?"
        )
    # The key on the chosen preset, in a sweep, or added with + is no mistake.
    assert unknown_key(["-m", "data=imagefolder,imagenet", "data.format=shards", "seed=0,1"]) is None
    assert unknown_key(["data=imagefolder", "data.root=/images"]) is None  # a required key (???) is a key
    assert unknown_key(["+trainer.val_check_interval=0.5", "attention=pvt", "attention.kwargs.linear=true"]) is None


def test_a_key_of_other_presets_names_them():
    line = unknown_key(["data.pipeline=device"])
    assert line == (
        "data.pipeline is not a key of data=shapes; the data presets that take it: imagefolder, imagefolder_small, "
        "imagenet (e.g. data=imagefolder data.pipeline=device)"
    )
