"""Write errors (issue 22, class 4): a full disk, a file size limit (``ulimit -f``) or a name over the file
system's limit under a cache, checkpoint, export or ``shards`` write says what could not be written, where
and why (exit 2, never "unexpected"), and leaves nothing half-written that blocks the next run."""

from __future__ import annotations

import errno
import json
import os
import resource
from pathlib import Path

import pytest
import safetensors.torch
import torch
from conftest import ROOT, TINY_XOR
from safetensors import SafetensorError

from polyalign.cli import main
from polyalign.core.errors import PolyalignError
from polyalign.files.atomic import save_tensors
from polyalign.training.tensor_store import TensorStore

XOR = ROOT / "recipes" / "xor-clip.yaml"
ENOSPC_TEXT = "Error while serializing: I/O error: No space left on device (os error 28)"  # safetensors' words


def _full_disk_save_file(real, fail_when):
    """``safetensors.torch.save_file`` that writes half a file and fails as safetensors does on a full disk."""
    def save_file(tensors, filename, *a, **k):
        if fail_when(filename):
            Path(filename).write_bytes(b"\x00" * 10)
            raise SafetensorError(ENOSPC_TEXT)
        return real(tensors, filename, *a, **k)
    return save_file


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "unexpected" not in err and "bug" not in err, err
    return err


def test_a_file_size_limit_is_an_os_error_naming_the_file(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # Python ignores SIGXFSZ: the write fails
    try:
        with pytest.raises(OSError) as raised:
            save_tensors({"x": torch.zeros(10_000)}, tmp_path / "x.safetensors")
        with pytest.raises(OSError) as too_long:
            save_tensors({"x": torch.zeros(1)}, tmp_path / ("n" * 300 + ".safetensors"))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert raised.value.errno == errno.EFBIG and raised.value.filename == str(tmp_path / "x.safetensors")
    assert too_long.value.errno == errno.ENAMETOOLONG


def test_a_full_cache_folder_says_so_and_leaves_nothing_that_blocks_the_next_run(tmp_path, monkeypatch):
    store = TensorStore(tmp_path / "cache")
    (tmp_path / "cache" / ".tmp-part-host-1-000000-1.safetensors").write_bytes(b"\x00" * 7)  # a killed writer's
    store.put("a", torch.ones(3))
    real = safetensors.torch.save_file
    monkeypatch.setattr(safetensors.torch, "save_file", _full_disk_save_file(real, lambda f: True))
    with pytest.raises(PolyalignError, match=r"cannot write to the cache folder .*cache: No space left on device "
                                             r"\(the disk or quota is full: free some space, or set cache.dir"):
        store.flush()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [".tmp-part-host-1-000000-1.safetensors"]
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    store.flush()  # space is freed
    again = TensorStore(tmp_path / "cache")  # the next run reads the folder: the leftover is not a cache file
    assert torch.equal(again.get("a"), torch.ones(3))


def test_a_run_folder_name_over_the_limit_says_so(tmp_path, capsys):
    assert main(["train", str(XOR), *TINY_XOR, "--out", str(tmp_path / ("n" * 300))]) == 2
    err = _one_error(capsys)
    assert "File name too long" in err and "shorter name" in err


def _manifest(folder: Path, rows: int = 6) -> Path:
    folder.mkdir()
    for split in ("train", "val", "test"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps({"a": [float(i), 1.0], "b": f"text {i}"}) + "\n"
                                                       for i in range(rows)))
    return folder


def test_shards_on_a_full_disk_say_where_and_the_rerun_replaces_what_was_written(tmp_path, monkeypatch, capsys):
    import tarfile

    data, out = _manifest(tmp_path / "data"), tmp_path / "shards"
    real = tarfile.TarFile.addfile
    calls = []

    def fills_up(self, *a, **k):
        calls.append(1)
        if len(calls) > 7:  # two shards of 3 written, the third fails
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, *a, **k)

    monkeypatch.setattr(tarfile.TarFile, "addfile", fills_up)
    assert main(["shards", str(data), str(out), "--shard-size", "3"]) == 2
    err = _one_error(capsys)
    assert "could not write the shard" in err and "No space left on device" in err and "--resume" not in err
    assert "run the command again" in err
    assert not (out / "sizes.json").exists() and not list(out.glob(".*.tmp"))
    monkeypatch.setattr(tarfile.TarFile, "addfile", real)
    assert main(["shards", str(data), str(out), "--shard-size", "3"]) == 0  # not refused as "not empty"
    assert json.loads((out / "sizes.json").read_text()) == {f"{s}-{i:06d}.tar": 3 for s in ("train", "val", "test")
                                                            for i in range(2)}
    assert [p.name for p in out.glob(".*")] == []  # finished: no marker of an unfinished write
    for folder in (out, tmp_path / "mine"):  # a finished folder, or shards the user made, are never deleted
        folder.mkdir(exist_ok=True)
        (folder / "train-000000.tar").touch()
        assert main(["shards", str(data), str(folder), "--shard-size", "3"]) == 2
        assert "not empty" in capsys.readouterr().err


def test_an_export_to_a_full_disk_names_the_export(tmp_path, monkeypatch, capsys):
    from polyalign.inference import export

    assert main(["train", str(XOR), *TINY_XOR, "eval=[]", "--out", str(tmp_path / "runs")]) == 0
    run = next((tmp_path / "runs").iterdir())
    capsys.readouterr()

    def full(src, dst, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(export.shutil, "copyfile", full)
    assert main(["export", str(run), str(tmp_path / "export")]) == 2
    err = _one_error(capsys)
    assert f"could not write the export {tmp_path / 'export'}: No space left on device" in err
    assert not (tmp_path / "export").exists() and not list(tmp_path.glob(".export*"))


def test_a_cache_folder_name_over_the_limit_says_so(tmp_path):
    with pytest.raises(PolyalignError, match=r"cannot create the cache folder .*: File name too long \(a file or "
                                             r"folder name is longer than the file system allows"):
        TensorStore(tmp_path / ("n" * 300) / "inputs")


def test_a_file_size_limit_under_a_checkpoint_is_a_clear_error(tmp_path, capsys):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1600, hard))  # recipe.yaml fits, the weights of a checkpoint do not
    try:
        code = main(["train", str(XOR), *TINY_XOR, "logging=[]", "--out", str(tmp_path)])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    err = _one_error(capsys)
    assert code == 2 and "could not save checkpoint" in err and "File too large" in err and "ulimit -f" in err
    run = next(tmp_path.iterdir())
    assert not list((run / "checkpoints").glob(".*tmp*"))
    assert main(["train", "--resume", str(run)]) == 0  # the limit lifted, the run starts over and finishes
