"""Tuples streamed from webdataset shards: `polyalign shards`, the round trip, the split over
processes and workers, missing and corrupt members, and kill -9 + resume mid-epoch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import ROOT
from crash_plugin import StopAtStep
from PIL import Image
from test_reliability_resume import _assert_same_run, _kill_when, _logged_step, _only_run, _slow_env

import polyalign
from polyalign.cli import main
from polyalign.core.batch import Collator
from polyalign.core.data import RowLoader
from polyalign.core.encoder import FileBytes
from polyalign.core.errors import PolyalignError
from polyalign.core.stream import Shard, StreamLoader, StreamSplit, StreamTuples
from polyalign.plugins.datasets.demo import write_demo
from polyalign.plugins.datasets.shards import write_shards
from polyalign.testing import check_dataset

pytest.importorskip("webdataset")

DEMO_MODALITIES = {"image": "png", "audio": "wav", "ecg": "npy", "text": "txt"}
XOR = ROOT / "polyalign" / "recipes" / "xor-clip.yaml"


def write_manifest(folder: Path, splits: dict[str, list[dict]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def numbered(n: int, start: int = 0) -> list[dict]:
    """Rows whose vector ``v`` holds the row number (so a batch says which rows it has)."""
    return [{"id": f"r{i}", "label": i % 3, "v": [float(i), 1.0]} for i in range(start, start + n)]


def vector_stream(folder: Path, sizes: list[int]):
    """A train stream of vector tuples in shards of the given sizes (rows numbered in order)."""
    shards = folder / "shards"
    shards.mkdir()
    start = 0
    for k, size in enumerate(sizes):  # one shard per size: write_shards with --shard-size would make them equal
        one = write_manifest(folder / f"part{k}", {"train": numbered(size, start)})
        for r in write_shards(one, folder / f"out{k}", size, shuffle=False):
            r.shards[0].rename(shards / f"train-{k:06d}.tar")
        start += size
    return polyalign.build("dataset", "webdataset", train=str(shards / f"train-{{000000..{len(sizes) - 1:06d}}}.tar"),
                           modalities={"v": "v.json"}, shuffle_buffer=8).split("train")


def rows_of(loader) -> list[list[int]]:
    """The row numbers in each batch a loader yields."""
    return [batch.inputs["v"][:, 0].long().tolist() for batch in loader]


def stream_loader(stream, rank: int, world: int, workers: int, batch: int = 4, seed: int = 3) -> StreamLoader:
    from polyalign.plugins.encoders.vector import VectorConfig, VectorEncoder

    enc = VectorEncoder(VectorConfig(dim=2, hidden=[]))
    rows = RowLoader({"v": enc.load}, None, {"v": enc.load_batch})
    return StreamLoader(StreamTuples(stream, rows, Collator({"v": enc.collate}), batch, seed, rank, world), workers)


# --------------------------------------------------------------------------- writing and reading shards
def test_shards_round_trip_gives_the_same_samples(tmp_path, capsys):
    data = write_demo(tmp_path / "demo", n_train=14, n_val=5, n_test=5, missing_rate=0.3)
    extra = {"id": "inline-1", "label": "cat", "image": "image/train-00000.png", "text": "a cat, inline",
             "audio": "audio/train-00001.wav", "ecg": "ecg/train-00002.npy"}
    with open(data / "train.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(extra) + "\n")
    assert main(["shards", str(data), str(tmp_path / "shards"), "--shard-size", "4"]) == 0
    printed = capsys.readouterr().out
    assert f"train: {tmp_path / 'shards'}/train-{{000000..000003}}.tar" in printed
    (line,) = [x for x in printed.splitlines() if x.startswith("  modalities: ")]
    assert sorted(line.strip()[len("modalities: {"):-1].split(", ")) == sorted(f"{m}: {e}" for m, e in
                                                                         DEMO_MODALITIES.items())
    manifest = polyalign.build("dataset", "manifest", path=str(data))
    shards = polyalign.build("dataset", "webdataset", path=str(tmp_path / "shards"), modalities=DEMO_MODALITIES)
    old_spelling = {m: f"{m}.{e}" for m, e in DEMO_MODALITIES.items()}  # as recipes wrote it before: still reads
    assert list(polyalign.build("dataset", "webdataset", path=str(tmp_path / "shards"),
                                modalities=old_spelling).split("train")) == list(shards.split("train"))
    image = polyalign.build("encoder", "image", model="test_resnet", image_size=16)
    for split in ("train", "val", "test"):
        expected = {s["id"]: s for s in manifest.split(split)}
        got = {s["id"]: s for s in shards.split(split)}
        assert got.keys() == expected.keys() and len(shards.split(split)) == len(expected)
        for key, sample in expected.items():
            back = got[key]
            assert set(back) == set(sample) and back.get("label") == sample.get("label")
            for m in DEMO_MODALITIES:
                if m not in sample:
                    continue
                assert isinstance(back[m], FileBytes)
                source = manifest.root / sample[m]
                if source.is_file():
                    assert back[m].read_bytes() == source.read_bytes()
                else:
                    assert back[m].read_text() == sample[m]  # inline text became a .txt member
            if "image" in sample:
                assert torch.equal(image.load(back["image"], None), image.load(sample["image"], manifest.root))


def test_shards_read_with_plain_webdataset_and_the_conventional_keys(tmp_path):
    import webdataset as wds

    data = write_demo(tmp_path / "demo", n_train=6, n_val=2, n_test=2, missing_rate=0.0)
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    with open(data / "train.jsonl", "a", encoding="utf-8") as fh:  # a string label and an inline text
        fh.write(json.dumps({**rows[0], "id": "extra", "label": "cat", "text": "an inline caption"}) + "\n")
    written = write_shards(data, tmp_path / "shards", 100, shuffle=False)
    decoded = list(wds.WebDataset(str(written[0].shards[0]), shardshuffle=False).decode())
    assert len(decoded) == 7
    for sample, row in zip(decoded, [*rows, {**rows[0], "id": "extra", "label": "cat"}]):
        assert set(sample) - {"__url__", "__local_path__"} == {"__key__", "png", "wav", "npy", "txt", "id.txt",
                                                               "cls" if row["label"] != "cat" else "label.txt"}
        assert sample["png"] == (data / row["image"]).read_bytes()  # files are their bytes, as written
        assert sample["id.txt"] == row["id"] and sample.get("cls", sample.get("label.txt")) == row["label"]
    assert decoded[0]["txt"] == (data / rows[0]["text"]).read_text(encoding="utf-8")
    assert decoded[-1]["txt"] == "an inline caption"


def test_modalities_sharing_an_extension_are_named_by_modality(tmp_path):
    import tarfile

    write_manifest(tmp_path / "m", {"train": [{"v": [1.0], "w": [2.0], "t": "hi", "label": 0}]})
    (written,) = write_shards(tmp_path / "m", tmp_path / "s", 10)
    with tarfile.open(written.shards[0]) as tar:
        assert sorted(tar.getnames()) == ["00000000.cls", "00000000.txt", "00000000.v.json", "00000000.w.json"]
    assert written.extensions == {"v": {"v.json"}, "w": {"w.json"}, "t": {"txt"}}


def test_a_cell_naming_a_missing_image_is_not_written_as_text(tmp_path):
    write_manifest(tmp_path / "m", {"train": [{"v": [1.0], "image": "img/gone.png", "t": "a photo.png of me"}]})
    with pytest.raises(PolyalignError, match=r"line 1, 'image': file .*img/gone\.png not found"):
        write_shards(tmp_path / "m", tmp_path / "s", 10)


def test_img2dataset_shards_read_with_the_default_modalities(tmp_path):
    import webdataset as wds

    image = tmp_path / "a.jpg"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    with wds.TarWriter(str(tmp_path / "00000.tar"), encoder=False) as tar:  # as img2dataset writes them
        for k in range(3):
            tar.write({"__key__": f"0000{k}", "jpg": image.read_bytes(), "txt": f"caption {k}".encode(),
                       "json": json.dumps({"url": "http://x", "key": f"0000{k}", "caption": f"caption {k}"}).encode()})
    with wds.TarWriter(str(tmp_path / "old.tar"), encoder=False) as tar:  # `polyalign shards` before 0.2
        tar.write({"__key__": "00000007", "image.png": image.read_bytes(), "text.txt": b"old", "id": b"r7"})
    samples = list(polyalign.build("dataset", "webdataset", train=str(tmp_path / "00000.tar")).split("train"))
    assert [sorted(s) for s in samples] == [["id", "image", "text"]] * 3
    assert samples[1]["text"].read_text() == "caption 1" and samples[1]["id"] == "00001"
    assert samples[0]["image"].read_bytes() == image.read_bytes()
    (old,) = polyalign.build("dataset", "webdataset", train=str(tmp_path / "old.tar")).split("train")
    assert old["text"].read_text() == "old" and old["image"].read_bytes() == image.read_bytes() and old["id"] == "r7"


def test_inline_numbers_and_string_labels_round_trip(tmp_path):
    rows = [{"id": "a", "label": "cat", "v": [1.5, -2.0, 3.25], "t": "hello"},
            {"id": "b", "label": 7, "v": [0.0, 1.0, 2.0]}]
    write_manifest(tmp_path / "m", {"train": rows})
    write_shards(tmp_path / "m", tmp_path / "s", 10)
    samples = {s["id"]: s for s in polyalign.build("dataset", "webdataset", path=str(tmp_path / "s"),
                                                   modalities={"v": "v.json", "t": "t.txt"}).split("train")}
    assert samples["a"]["v"] == [1.5, -2.0, 3.25] and samples["a"]["label"] == "cat"
    assert samples["a"]["t"].read_text() == "hello" and "t" not in samples["b"] and samples["b"]["label"] == 7


def test_commands_have_help(capsys):
    for command in ("shards", "cache"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--shard-size" in out and "cache.features" in out


def test_bad_configs_and_paths_are_clear(tmp_path):
    write_manifest(tmp_path / "m", {"train": numbered(6)})
    write_shards(tmp_path / "m", tmp_path / "s", 3)
    with pytest.raises(PolyalignError, match="not empty"):
        write_shards(tmp_path / "m", tmp_path / "s", 3)
    with pytest.raises(PolyalignError, match=r"shard .*train-000002.tar not found \(from "):
        polyalign.build("dataset", "webdataset", train=str(tmp_path / "s" / "train-{000000..000009}.tar"),
                        modalities={"v": "v.json"})
    with pytest.raises(PolyalignError, match="not a local path"):
        polyalign.build("dataset", "webdataset", train="https://example.com/a-{0..3}.tar", modalities={"v": "json"})
    shard = tmp_path / "s" / "train-000000.tar"
    with pytest.raises(PolyalignError, match="data: source weights need resampled: true"):
        polyalign.load_recipe(XOR, [f"data={{plugin: webdataset, modalities: {{v: json}}, sources: "
                                    f"[{{urls: '{shard}', weight: 1}}, {{urls: '{shard}', weight: 3}}]}}"])
    with pytest.raises(PolyalignError, match="data.modalities: extension 'json' is given to both"):
        polyalign.load_recipe(XOR, [f"data={{plugin: webdataset, path: '{tmp_path}', "
                                    f"modalities: {{v: json, w: json}}}}"])


def test_shards_are_counted_without_a_sizes_file(tmp_path):
    write_manifest(tmp_path / "m", {"train": numbered(7)})
    write_shards(tmp_path / "m", tmp_path / "s", 3)
    (tmp_path / "s" / "sizes.json").unlink()
    data = polyalign.build("dataset", "webdataset", path=str(tmp_path / "s"), modalities={"v": "v.json"})
    stream = data.split("train")
    assert [s.size for s in stream.shards] == [3, 3, 1] and len(list(stream)) == 7


# --------------------------------------------------------------------------- the split over ranks and workers
def test_layout_reads_each_sample_once_per_epoch(tmp_path):
    stream = vector_stream(tmp_path, [7, 3, 12, 5, 9, 11, 1])  # 48 samples, shards of uneven sizes
    for world, workers in ((1, 1), (2, 1), (2, 3), (3, 2)):
        for epoch in (0, 1):
            seen = []
            for rank in range(world):
                tuples = stream_loader(stream, rank, world, 0).tuples
                for worker in range(workers):
                    seen += [s["v"][0] for _, s in tuples.records(epoch, worker, workers)]
            usable = (48 // (world * 4)) * world * 4
            assert len(seen) == len(set(seen)) == usable, (world, workers, epoch)


class _Numbered(StreamSplit):
    """Shards of the given sizes in memory, samples numbered in order (no tar: the layout alone)."""

    def __init__(self, sizes: list[int], shuffle_buffer: int):
        super().__init__([Shard(f"s{k}", n) for k, n in enumerate(sizes)], shuffle_buffer=shuffle_buffer)
        self.starts = dict(zip((s.name for s in self.shards), np.cumsum([0, *sizes]).tolist()))

    def read(self, shard: Shard, skip: int = 0):
        first = self.starts[shard.name]
        return ((str(i), {"v": [float(i)]}) for i in range(first + skip, first + shard.size))


def _delivered(tuples: StreamTuples, workers: int, epoch: int, start: int, monkeypatch) -> list[list[int]]:
    """The batches a DataLoader of ``workers`` workers delivers from batch ``start`` on, in its order (it asks
    its workers in turn, worker 0 first), each worker running the real ``StreamTuples.__iter__``."""
    import polyalign.core.stream as stream_module

    tuples.set_epoch(epoch, start)
    tuples.load = lambda chunk, first: ([int(s["v"][0]) for _, s in chunk], [])
    per_worker = []
    for worker in range(workers):
        monkeypatch.setattr(stream_module, "get_worker_info", lambda w=worker: SimpleNamespace(id=w, num_workers=workers))
        per_worker.append([rows for rows, _ in tuples])
    return [per_worker[m % workers][m // workers] for m in range(tuples.batches - start)]


def test_the_layout_partitions_random_shard_sizes_over_any_ranks_workers_and_resume_point(monkeypatch):
    """Evidence behind "every sample once", by exhaustion: for random shard sizes (empty ones too), worlds,
    workers, batch sizes, buffers and epochs, the batches of all ranks hold disjoint samples whose union is the
    epoch's usable ones, and a resume at any batch delivers exactly the batches not yet delivered."""
    rng = np.random.default_rng(0)
    for case in range(300):
        sizes = rng.integers(0, 20, rng.integers(1, 9)).tolist()
        if not sum(sizes):
            continue
        split = _Numbered(sizes, int(rng.choice([1, 3, 8])))
        world, workers, batch, epoch = (int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 6)),
                                        int(rng.integers(0, 3)))
        seen = []
        for rank in range(world):
            tuples = StreamTuples(split, None, None, batch, 3, rank, world)  # rows and collator: `load` replaced
            full = _delivered(tuples, workers, epoch, 0, monkeypatch)
            assert len(full) == tuples.batches and all(len(b) == batch for b in full)
            seen += [i for b in full for i in b]
            start = int(rng.integers(0, tuples.batches + 1))
            assert _delivered(tuples, workers, epoch, start, monkeypatch) == full[start:], (case, sizes, world,
                                                                                           workers, batch, start)
        usable = (sum(sizes) // (world * batch)) * world * batch
        assert len(seen) == len(set(seen)) == usable and set(seen) <= set(range(sum(sizes))), (case, sizes, world,
                                                                                               workers, batch)


def _collect_rank(rank: int, world: int, folder: str) -> None:
    torch.set_num_threads(1)
    stream = polyalign.build("dataset", "webdataset", train=f"{folder}/shards/train-{{000000..000006}}.tar",
                             modalities={"v": "v.json"}, shuffle_buffer=8).split("train")
    loader = stream_loader(stream, rank, world, workers=2)
    epochs = []
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        epochs.append(rows_of(loader))
    torch.save(epochs, Path(folder) / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_processes_with_two_workers_cover_every_sample_once(tmp_path):
    stream = vector_stream(tmp_path, [7, 3, 12, 5, 9, 11, 1])  # 48 = 2 ranks x 6 batches x 4 rows
    mp.start_processes(_collect_rank, args=(2, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for epoch in (0, 1):
        batches = ranks[0][epoch] + ranks[1][epoch]
        rows = [i for b in batches for i in b]
        # every sample once; a failure says which rows went missing or came twice, and where each rank had them
        missing, repeated = sorted(set(range(48)) - set(rows)), sorted({i for i in rows if rows.count(i) > 1})
        assert len(batches) == 12 and all(len(b) == 4 for b in batches), (epoch, ranks[0][epoch], ranks[1][epoch])
        assert not missing and not repeated, (epoch, missing, repeated, ranks[0][epoch], ranks[1][epoch])
        # what each process saw is what the layout says, in the DataLoader's order (batch j from worker j % 2)
        for rank in (0, 1):
            expected = rows_of(stream_loader(stream, rank, 2, 2)) if epoch == 0 else None
            if expected is not None:
                assert ranks[rank][0] == expected
    assert ranks[0][0] != ranks[0][1]  # a new order each epoch


def test_resume_mid_epoch_continues_the_stream(tmp_path):
    stream = vector_stream(tmp_path, [10, 10, 10, 10, 8])
    for workers in (0, 2):
        loader = stream_loader(stream, 0, 1, workers)
        loader.set_epoch(1)
        full = rows_of(loader)
        loader.set_epoch(1, start_batch=5)
        assert rows_of(loader) == full[5:]


def test_resampled_sources_mix_by_weight(tmp_path):
    a = write_manifest(tmp_path / "a", {"train": numbered(40)})
    b = write_manifest(tmp_path / "b", {"train": numbered(40, start=1000)})
    write_shards(a, tmp_path / "sa", 10)
    write_shards(b, tmp_path / "sb", 10)
    stream = polyalign.build("dataset", "webdataset", modalities={"v": "v.json"}, resampled=True,
                             sources=[{"urls": str(tmp_path / "sa" / "train-{000000..000003}.tar"), "weight": 1},
                                      {"urls": str(tmp_path / "sb" / "train-{000000..000003}.tar"), "weight": 3}]
                             ).split("train")
    rows = [i for epoch in range(10) for b in _epoch(stream_loader(stream, 0, 1, 0), epoch) for i in b]
    share_b = np.mean([i >= 1000 for i in rows])
    assert len(rows) == 10 * 80 and 0.70 < share_b < 0.80  # 3 / (1 + 3) = 0.75


def _epoch(loader: StreamLoader, epoch: int) -> list[list[int]]:
    loader.set_epoch(epoch)
    return rows_of(loader)


# --------------------------------------------------------------------------- missing and corrupt members
def test_missing_members_make_absent_modalities(tmp_path):
    rows = [{"id": f"r{i}", "v": [float(i), 0.0], **({"w": [1.0, 2.0, 3.0]} if i % 3 else {})} for i in range(12)]
    write_manifest(tmp_path / "m", {"train": rows})
    write_shards(tmp_path / "m", tmp_path / "s", 5)
    data = polyalign.build("dataset", "webdataset", path=str(tmp_path / "s"), modalities={"v": "v.json", "w": "w.json"})
    from polyalign.plugins.encoders.vector import VectorConfig, VectorEncoder

    encoders = {"v": VectorEncoder(VectorConfig(dim=2, hidden=[])), "w": VectorEncoder(VectorConfig(dim=3, hidden=[]))}
    rows_loader = RowLoader({m: e.load for m, e in encoders.items()}, None)
    tuples = StreamTuples(data.split("train"), rows_loader, Collator({m: e.collate for m, e in encoders.items()}),
                          4, 0)
    loader = StreamLoader(tuples)
    loader.set_epoch(0)
    for batch in loader:
        ids = batch.inputs["v"][:, 0].long()
        assert torch.equal(batch.present["w"], ids % 3 != 0)


@pytest.fixture
def corrupt_shards(tmp_path) -> Path:
    """Shards of 10 image + vector tuples; the image of row 3 is not a PNG."""
    folder = tmp_path / "m"
    (folder / "img").mkdir(parents=True)
    rows = []
    for i in range(10):
        Image.fromarray(np.full((8, 8, 3), i * 20, dtype=np.uint8)).save(folder / "img" / f"{i}.png")
        rows.append({"id": f"r{i}", "label": i % 2, "image": f"img/{i}.png", "v": [float(i), 1.0]})
    (folder / "img" / "3.png").write_bytes(b"not a png at all")
    write_manifest(folder, {"train": rows, "val": rows[:4], "test": rows[4:8]})
    write_shards(folder, tmp_path / "s", 4, shuffle=False)
    return tmp_path / "s"


def _image_recipe(shards: Path, *extra: str) -> list[str]:
    return [f"data={{plugin: webdataset, path: '{shards}', modalities: {{image: image.png, v: v.json}}, "
            f"shuffle_buffer: 0}}",
            "modalities={image: {encoder: {plugin: image, model: test_resnet, image_size: 16}}, "
            "v: {encoder: {plugin: vector, hidden: []}}}",
            "loss={plugin: clip}", "eval=[]", "train.batch_size=4", "train.epochs=1", "train.warmup_steps=0", *extra]


def test_corrupt_member_stops_the_run_naming_shard_and_key(corrupt_shards, tmp_path, capsys):
    args = ["train", str(XOR), *_image_recipe(corrupt_shards, "train.num_workers=1"), "--out", str(tmp_path / "r")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"shard {corrupt_shards / 'train-000000.tar'}, sample '00000003'" in " ".join(err.split())
    assert "cannot decode image" in err and "Traceback" not in err


def test_corrupt_member_is_skipped_and_counted(corrupt_shards, tmp_path, capsys):
    run = polyalign.train(XOR, out=tmp_path / "r", overrides=_image_recipe(corrupt_shards, "data.on_error=skip",
                                                                           "train.num_workers=1"))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_train"] for r in rows if r["kind"] == "epoch"] == [1.0]
    out = capsys.readouterr().out
    assert "skipped 1 row(s) of split 'train'" in out and "sample '00000003'" in out


# --------------------------------------------------------------------------- kill -9 and resume
def _xor_shards(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    splits = {}
    for split, n in (("train", 256), ("val", 32), ("test", 32)):
        a, b = rng.integers(0, 2, (n, 5)), rng.integers(0, 2, (n, 5))
        splits[split] = [{"id": f"{split}{i}", "a": a[i].tolist(), "b": b[i].tolist(), "c": (a[i] ^ b[i]).tolist()}
                         for i in range(n)]
    write_manifest(tmp_path / "xor", splits)
    write_shards(tmp_path / "xor", tmp_path / "shards", 24)
    return tmp_path / "shards"


def _shard_recipe(shards: Path) -> list[str]:
    # 8 batches of 32 per epoch, 2 epochs; two DataLoader workers read the shards
    return [f"data={{plugin: webdataset, path: '{shards}', modalities: {{a: a.json, b: b.json, c: c.json}}, "
            f"shuffle_buffer: 16}}", "train.batch_size=32", "train.epochs=2", "train.warmup_steps=2",
            "train.log_every=1", "train.checkpoint_every=3", "train.keep_last=2", "train.num_workers=2",
            "eval=[{plugin: zero_shot, target: b, candidates: unique}]"]


@pytest.mark.slow
def test_sigkill_then_resume_on_shards_matches_uninterrupted_run(tmp_path):
    shards = _xor_shards(tmp_path)
    overrides = _shard_recipe(shards)
    full = polyalign.train(XOR, out=tmp_path / "full", overrides=overrides)
    cut_out = tmp_path / "cut"
    _kill_when([sys.executable, "-m", "polyalign", "train", str(XOR), *overrides, "--out", str(cut_out)],
               _slow_env(tmp_path), cut_out, at_step=4)  # mid-epoch, after the step-3 checkpoint
    cut = _only_run(cut_out)
    assert _logged_step(cut_out) < 16
    done = subprocess.run([sys.executable, "-m", "polyalign", "train", "--resume", str(cut)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    _assert_same_run(full, cut)


@pytest.mark.slow
def test_resume_with_another_layout_goes_on_from_the_next_epoch(tmp_path, capsys):
    from polyalign.core.plugin_manager import make_plugins

    overrides = _shard_recipe(_xor_shards(tmp_path)) + ["train.num_workers=0"]
    with pytest.raises(KeyboardInterrupt):
        polyalign.train(XOR, out=tmp_path / "r", overrides=overrides, plugins=make_plugins(extra=[StopAtStep(4)]))
    run = _only_run(tmp_path / "r")
    polyalign.train(None, resume=run, overrides=["train.num_workers=1"])
    assert "this run has 1x1; a streamed epoch cannot be continued with another layout" in \
        " ".join(capsys.readouterr().out.split())
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in epochs if r["kind"] == "epoch"] == [2]  # epoch 1 was cut short, epoch 2 ran whole


@pytest.mark.slow
def test_auto_workers_are_chosen_from_the_data_and_machine_and_recorded(tmp_path, tiny_xor):
    import yaml

    from polyalign.training.loaders import MAX_WORKERS
    from polyalign.training.threads import usable_cpus

    numbers = polyalign.train(XOR, out=tmp_path / "xor", overrides=tiny_xor + ["eval=[]"])
    assert yaml.safe_load((numbers / "recipe.yaml").read_text())["train"]["num_workers"] == 0  # nothing to decode
    overrides = _shard_recipe(_xor_shards(tmp_path))[:1] + ["train.batch_size=64", "train.epochs=1", "eval=[]"]
    streamed = polyalign.train(XOR, out=tmp_path / "shards", overrides=overrides)
    expected = max(0, min(MAX_WORKERS, usable_cpus() - 1))
    assert yaml.safe_load((streamed / "recipe.yaml").read_text())["train"]["num_workers"] == expected


def test_the_webdataset_dataset_keeps_the_dataset_contract(tmp_path):
    shards = _xor_shards(tmp_path)
    check_dataset("webdataset", path=str(shards), modalities={"a": "a.json", "b": "b.json", "c": "c.json"})
