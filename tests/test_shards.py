"""data.format=shards (data/readers/shards.py) and python -m shunted_lab.data.readers.pack (data/readers/pack.py)."""

import functools
import http.server
import io
import json
import shlex
import tarfile
import threading
from collections import Counter
from pathlib import Path

import pytest
import torch
from helpers import TINY, compose_cfg, read_metrics, run_py, write_image_folder
from hydra.utils import instantiate

from shunted_lab.config import user_step
from shunted_lab.data.readers.pack import PROGRESS_FILE, main
from shunted_lab.data.resumable import ResumableSampler, shard_window_order
from shunted_lab.exits import ConfigError, DataError
from shunted_lab.training.fit import train


def pack_folder(tmp_path: Path, per_shard: int = 5) -> Path:
    """A 3-class JPEG folder (8 images a class a split, one more that does not decode) packed into tmp_path/shards."""
    write_image_folder(tmp_path / "images", per_class=8, suffix="jpg")
    good = (tmp_path / "images" / "train" / "dog" / "0.jpg").read_bytes()
    (tmp_path / "images" / "train" / "dog" / "cut.jpg").write_bytes(good[: len(good) // 2])
    main([str(tmp_path / "images"), str(tmp_path / "shards"), f"--samples-per-shard={per_shard}", "--workers=1"])
    return tmp_path / "shards"


def shard_data(tmp_path: Path, root, *overrides: str):
    cfg = compose_cfg(
        tmp_path, "data=imagefolder", "data.format=shards", f"data.root={root}", "data.image_size=32", *overrides
    )
    return user_step("data", lambda: instantiate(cfg.data))  # as run.py builds it: ConfigError, one line


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_pack_writes_the_published_layout_leaves_out_what_does_not_decode_and_a_rerun_writes_only_what_is_missing(
    tmp_path, capsys
):
    shards = pack_folder(tmp_path)
    info = json.loads((shards / "_info.json").read_text())
    assert info["num_classes"] == 3 and set(info["splits"]) == {"train", "validation"}
    train = info["splits"]["train"]
    assert train["num_samples"] == 24 == sum(train["shard_lengths"]) and len(train["filenames"]) == 5
    assert train["filenames"][0] == "images-train-0000.tar" and info["splits"]["validation"]["num_samples"] == 24
    assert (shards / "classes.txt").read_text().split() == ["cat", "dog", "fox"]
    assert (shards / "skipped.txt").read_text().startswith("train/dog/cut.jpg\t")
    # Each sample: the file's own bytes, its class index, and where it came from.
    first = members(shards / "images-train-0000.tar")
    key = "train_00000000"
    meta = json.loads(first[f"{key}.json"])
    assert first[f"{key}.jpg"] == (tmp_path / "images" / meta["filename"]).read_bytes()
    assert int(first[f"{key}.cls"]) == meta["label"] == ["cat", "dog", "fox"].index(meta["filename"].split("/")[1])
    classes = {json.loads(v)["filename"].split("/")[1] for k, v in first.items() if k.endswith(".json")}
    assert len(classes) > 1  # the training samples are shuffled over the shards
    # A stopped pack: one shard never written, another half-written; the rerun writes that one alone.
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in shards.glob("*.tar")}
    (shards / "images-train-0003.tar").unlink()
    (shards / ".images-train-0003.tar.tmp123").write_bytes(b"half")
    main([str(tmp_path / "images"), str(shards), "--samples-per-shard=5", "--workers=1"])
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in shards.glob("*.tar")}
    assert after.keys() == before.keys() and not list(shards.glob(".*.tmp*"))
    assert [n for n in after if after[n][0] != before[n][0]] == ["images-train-0003.tar"]
    assert after["images-train-0003.tar"][1] == before["images-train-0003.tar"][1]
    assert "train: 24 images in 5 shards" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "images"), str(shards), "--samples-per-shard=4", "--workers=1"])
    assert stop.value.code == 2 and "holds a pack made with" in capsys.readouterr().err
    assert json.loads((shards / PROGRESS_FILE).read_text())["arguments"]["samples_per_shard"] == 5


def test_pack_prints_a_command_that_trains_on_its_shards(tmp_path, capsys):
    pack_folder(tmp_path)
    out = capsys.readouterr().out
    assert "left out 1 image that did not decode" in out
    [command] = [line.removeprefix("train on them: ") for line in out.splitlines() if line.startswith("train on")]
    python, script, *overrides = shlex.split(command)
    assert (python, script) == ("python", "run.py")
    cfg = compose_cfg(tmp_path, *overrides, "data.image_size=32")
    train(cfg)
    metrics = read_metrics(cfg)
    # It trained on the shards' samples (an image folder at data.root would have none).
    samples = json.loads((Path(cfg.data.root) / "_info.json").read_text())["splits"]["train"]["num_samples"]
    assert metrics["global_step"] == samples // cfg.data.batch_size * cfg.trainer.max_epochs > 0


def test_pack_onto_a_file_or_from_a_folder_the_reader_refuses_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "out.tar").write_text("")
    write_image_folder(tmp_path / "images", classes=("dog", "fox"))
    (tmp_path / "images" / "train" / "cat").mkdir()
    cases = {
        "out.tar is a file": [tmp_path, tmp_path / "out.tar"],
        "nowhere is not a folder": [tmp_path / "nowhere", tmp_path],
        # The rule data.format=folder reads by (test_resilience), so that a pack never holds an empty class.
        "images: train/ has empty class folders ['cat']": [tmp_path / "images", tmp_path / "shards"],
    }
    for message, argv in cases.items():
        with pytest.raises(SystemExit) as stop:
            main([str(a) for a in argv])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_the_shard_order_shuffles_whole_runs_of_shards_and_the_devices_share_it_out_once():
    lengths = [5, 5, 5, 5, 4]
    starts = [0, 5, 10, 15, 20, 24]
    shard = {i: s for s in range(5) for i in range(starts[s], starts[s + 1])}
    order = shard_window_order(lengths, 2, torch.Generator().manual_seed(0))
    assert sorted(order) == list(range(24))
    shuffled = torch.randperm(5, generator=torch.Generator().manual_seed(0)).tolist()  # the shards' order
    start = 0
    for run in (shuffled[:2], shuffled[2:4], shuffled[4:]):  # each run of 2 shards: their samples together
        end = start + sum(lengths[s] for s in run)
        assert {shard[i] for i in order[start:end]} == set(run)
        start = end
    assert order != shard_window_order(lengths, 2, torch.Generator().manual_seed(1))
    dataset = list(range(24))
    shares = []
    for rank in (0, 1):
        sampler = ResumableSampler(dataset, batch_size=4, seed=3, shard_lengths=lengths, shard_window=2)
        sampler.rank, sampler.num_replicas = rank, 2
        sampler.num_samples, sampler.total_size = 12, 24
        shares.append([index for _, index in sampler])
    assert sorted(shares[0] + shares[1]) == list(range(24))


def test_shards_served_over_http_read_as_the_local_ones(tmp_path):
    shards = pack_folder(tmp_path)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(shards))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        remote = shard_data(tmp_path, url, f"data.shard_cache={tmp_path}/cache")
        local = shard_data(tmp_path, shards)
        for data in (remote, local):
            data.setup("fit")
        assert remote.classes == local.classes == ["cat", "dog", "fox"]
        for split in ("train_set", "val_set"):
            there, here = getattr(remote, split), getattr(local, split)
            assert len(there) == len(here) == 24
            assert [there.read(i)[:2] for i in range(24)] == [here.read(i)[:2] for i in range(24)]
        assert remote.train_set.read(0)[2].startswith(f"{url}/images-train-0000.tar:train_")
        assert len(list((tmp_path / "cache").glob("*.tar"))) == 10  # each shard downloaded once
        with pytest.raises(ConfigError, match=f"data: cannot download shard {url}/gone-0.tar"):
            shard_data(tmp_path, url, f"data.shard_cache={tmp_path}/cache", "data.val_shards='gone-{0..1}.tar'")
        assert not list((tmp_path / "cache").glob("gone*"))  # an HTTP error is not kept as the shard
    finally:
        server.shutdown()


def rewrite_shard(path: Path, drop: str) -> None:
    """The shard without its member `drop`."""
    kept = {name: data for name, data in members(path).items() if name != drop}
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in kept.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_bad_shards_are_one_line_naming_the_shard_before_training_or_skipped_and_counted_when_met(tmp_path, caplog):
    shards = pack_folder(tmp_path)
    missing = shards / "images-train-0002.tar"
    missing.rename(tmp_path / "away.tar")
    with pytest.raises(ConfigError, match=f"^data: shard {missing} is missing$"):
        shard_data(tmp_path, shards)
    (tmp_path / "away.tar").rename(missing)
    cut = shards / "images-validation-0001.tar"
    whole = cut.read_bytes()
    cut.write_bytes(whole[:1000])
    with pytest.raises(ConfigError, match=f"^data: shard {cut} is truncated"):
        shard_data(tmp_path, shards)
    cut.write_bytes(whole[:1536])  # a whole number of blocks: found when read
    rewrite_shard(shards / "images-train-0001.tar", "train_00000006.cls")
    data = shard_data(tmp_path, shards)
    data.setup("fit")
    with pytest.raises(DataError, match=f"sample train_00000006 of shard {shards}/images-train-0001.tar has no cls"):
        data.train_set[6]
    with pytest.raises(DataError, match=f"shard {cut} is truncated"):
        data.val_set[5]
    skipping = shard_data(tmp_path, shards, "data.skip_bad_images=true")
    skipping.setup("fit")
    images, label = skipping.train_set[6]  # the next good sample in its place
    assert label == skipping.train_set.read(7)[1] and images.shape == (3, 32, 32)
    assert skipping.val_set[5][1] == skipping.val_set.read(10)[1]  # past the 5 samples of the cut shard
    assert int(skipping.train_set.skipped) == 1 and int(skipping.val_set.skipped) == 5
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping")]
    assert len([w for w in warnings if "images-validation-0001" in w]) == 1  # once per shard


@pytest.mark.slow
def test_a_ddp_run_on_shards_loads_every_training_sample_once_an_epoch_across_ranks_and_workers(tmp_path):
    shards = pack_folder(tmp_path)  # 24 training samples: 3 steps of 4 on each of 2 ranks
    seen = tmp_path / "seen"
    proc = run_py(
        tmp_path,
        *TINY,
        "data=imagefolder",
        "data.format=shards",
        f"data.root={shards}",
        "data.image_size=32",
        "data.batch_size=4",
        "data.num_workers=2",
        "data.shuffle_shards=2",
        "trainer=ddp_cpu",
        "trainer.strategy=ddp",  # a process per rank started as this one was: their loader workers fork
        "trainer.max_epochs=2",
        "+callbacks.seen._target_=helpers.SeenItems",
        f"+callbacks.seen.path={seen}",
    )
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    loaded = [line.split() for rank in (0, 1) for line in Path(f"{seen}.{rank}").read_text().splitlines()]
    for epoch in ("0", "1"):
        counts = Counter(int(index) for e, index in loaded if e == epoch)
        assert sorted(counts) == list(range(24)) and set(counts.values()) == {1}


def test_every_image_type_pack_writes_is_one_the_reader_reads(tmp_path):
    """The writer and the reader share the layout's member names (readers/layout.py): a BMP packed is
    a BMP read back, whole."""
    write_image_folder(tmp_path / "images", classes=("cat", "dog"), per_class=2, suffix="bmp")
    main([str(tmp_path / "images"), str(tmp_path / "shards"), "--workers=1"])
    data = shard_data(tmp_path, tmp_path / "shards")
    data.setup("fit")
    source = sorted((tmp_path / "images" / "val" / "cat").iterdir())[0].read_bytes()
    assert [data.val_set.read(i)[0] for i in range(len(data.val_set))].count(source) == 1
    image, label = data.val_set[0]
    assert image.shape == (3, 32, 32) and label in (0, 1)
