"""HDF5 shards: atomic writes, the validity check, the joined reader."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys

import h5py
import numpy as np
import pytest

from labelgen.plan import plan_shards, write_plan
from labelgen.shards import (
    DatasetSpec,
    LabelReader,
    ShardReadError,
    ShardWriter,
    check_shard,
    read_rows,
    remove_stale_tmp,
    shard_path,
)

SPECS = {
    "depth": DatasetSpec((4, 6), "float16", attrs={"units": "m"}),
    "disparity": DatasetSpec((4, 6), "uint16", attrs={"scale": 1 / 256}),
}


def write(path, ids, plan_id="p1", fail=()):
    with ShardWriter(path, ids, SPECS, {"stage": "t", "plan_id": plan_id, "settings": {"a": 1}}) as w:
        for i in range(len(ids)):
            if i in fail:
                w.fail(i, "bad frame\nsecond line")
            else:
                w.write(i, {"depth": np.full((4, 6), i + 1.5), "disparity": np.full((4, 6), 256 * (i + 1))})
    return path


def test_complete_shard_layout(tmp_path):
    path = write(tmp_path / "shard-00000.h5", ["a", "b", "c"], fail=(1,))
    with h5py.File(path, "r") as f:
        assert f.attrs["complete"] and f.attrs["schema_version"] == 2 and f.attrs["n_failed"] == 1
        assert all(f[name].fletcher32 for name in f)  # every dataset, bookkeeping ones too
        assert f.attrs["settings"] == '{"a": 1}'
        assert f["depth"].chunks == (1, 4, 6) and f["depth"].compression == "gzip"
        assert f["depth"].dtype == np.float16 and f["depth"].attrs["units"] == "m"
        assert [s.decode() for s in f["frame_id"][()]] == ["a", "b", "c"]
        assert f["ok"][()].tolist() == [True, False, True]
        assert f["failure"][1].decode() == "bad frame"  # one line
        assert np.all(f["depth"][1] == 0)
    status = check_shard(path, "p1", ["a", "b", "c"])
    assert status.complete and status.failures == (("b", "bad frame"),)


def test_an_exception_leaves_nothing_behind(tmp_path):
    path = tmp_path / "shard-00000.h5"
    with pytest.raises(RuntimeError):
        with ShardWriter(path, ["a", "b"], SPECS, {"plan_id": "p1"}) as w:
            w.write(0, {"depth": np.ones((4, 6)), "disparity": np.ones((4, 6))})
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_wrong_shapes_and_datasets_are_refused(tmp_path):
    with ShardWriter(tmp_path / "s.h5", ["a"], SPECS, {"plan_id": "p"}) as w:
        with pytest.raises(ValueError, match=r"frame a: disparity has shape \(3, 6\), expected \(4, 6\)"):
            w.write(0, {"depth": np.ones((4, 6)), "disparity": np.ones((3, 6))})
        with pytest.raises(ValueError, match=r"frame a: datasets \['depth'\] != \['depth', 'disparity'\]"):
            w.write(0, {"depth": np.ones((4, 6))})
        w.fail(0, "")
    assert check_shard(tmp_path / "s.h5", "p", ["a"]).failures == (("a", "unknown error"),)
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert not f["depth"][0].any()  # the valid depth of a refused frame was not written


def test_check_shard_states(tmp_path):
    path = write(tmp_path / "shard-00000.h5", ["a", "b"])
    assert check_shard(tmp_path / "none.h5", "p1", ["a"]).state == "missing"
    assert check_shard(path, "p2", ["a", "b"]).state == "stale"
    assert check_shard(path, "p1", ["a", "c"]).reason == "frame list differs from the plan"
    with h5py.File(path, "a") as f:
        f.attrs["complete"] = False
    assert check_shard(path, "p1", ["a", "b"]).reason == "not marked complete"
    path.write_bytes(path.read_bytes()[:1000])  # what a writer killed mid-file would leave
    status = check_shard(path, "p1", ["a", "b"])
    assert status.state == "invalid" and status.reason.startswith("unreadable")


def test_stale_temporary_files_are_removed(tmp_path):
    path = tmp_path / "shard-00003.h5"
    (tmp_path / "shard-00003.h5.tmp-123-abcd").write_bytes(b"partial")
    (tmp_path / "shard-00030.h5.tmp-123-abcd").write_bytes(b"other shard")
    assert remove_stale_tmp(path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["shard-00030.h5.tmp-123-abcd"]


def test_reader_joins_stages_by_shard_and_row(kitti_tree, tmp_path):
    plan = plan_shards(kitti_tree, drives=["2011_09_26_drive_0002"], shard_size=2)
    write_plan(plan, tmp_path)
    for stage in ("one", "two"):
        for shard in plan.shards:
            write(shard_path(tmp_path, stage, shard.name), shard.frame_ids, plan_id=plan.plan_id, fail=(1,))
    reader = LabelReader(tmp_path, ["one", "two"])
    assert len(reader) == 3
    item = pickle.loads(pickle.dumps(reader))[2]  # picklable for DataLoader workers
    assert item["frame_id"] == plan.frame_ids[2] == plan.shards[1].frame_ids[0]
    assert item["one/depth"].dtype == np.float32 and float(item["one/depth"][0, 0]) == 1.5
    assert float(item["two/disparity"][0, 0]) == 1.0  # uint16 / 256
    assert reader[1]["one/ok"] is False and reader[0]["two/ok"] is True
    reader.close()
    shard_path(tmp_path, "two", "shard-00001").unlink()
    with pytest.raises(ValueError, match=r"two/shard-00001\.h5: shard is missing"):
        LabelReader(tmp_path, ["one", "two"])


def flip_byte_in_chunk(path, dataset, row):
    """Damage a shard in place, as a failing disk would: one byte inside one stored chunk."""
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info_by_coord((row,) + (0,) * (f[dataset].ndim - 1))
    raw = bytearray(path.read_bytes())
    raw[info.byte_offset + info.size // 2] ^= 0x5A
    path.write_bytes(bytes(raw))


def test_a_damaged_chunk_is_caught_by_its_checksum(tmp_path, kitti_tree):
    plan = plan_shards(kitti_tree, drives=["2011_09_26_drive_0002"], shard_size=3)
    write_plan(plan, tmp_path)
    shard = plan.shards[0]
    path = write(shard_path(tmp_path, "one", shard.name), shard.frame_ids, plan_id=plan.plan_id)
    flip_byte_in_chunk(path, "depth", 2)
    assert check_shard(path, plan.plan_id, shard.frame_ids, verify="quick").complete  # attributes only
    status = check_shard(path, plan.plan_id, shard.frame_ids)  # full: every chunk
    assert status.state == "invalid" and status.reason.startswith("dataset depth row 2 is damaged")
    reader = LabelReader(tmp_path, ["one"])  # quick check at open, checksums on every read
    assert reader[1]["one/ok"] is True
    with pytest.raises(ShardReadError, match=rf"{path}: dataset depth row 2 is damaged \(.*\); rerun"):
        reader[2]


def test_non_finite_values_are_never_stored(tmp_path):
    with ShardWriter(tmp_path / "s.h5", ["a"], SPECS, {"plan_id": "p"}) as w:
        depth = np.ones((4, 6))
        depth[1, 2] = np.nan
        with pytest.raises(ValueError, match=r"frame a: depth holds 1 non-finite values"):
            w.write(0, {"depth": depth, "disparity": np.ones((4, 6))})
        w.fail(0, "nan depth")
    assert check_shard(tmp_path / "s.h5", "p", ["a"]).failures == (("a", "nan depth"),)


def test_only_temporary_files_of_gone_writers_are_removed(tmp_path):
    path = tmp_path / "shard-00001.h5"
    host = socket.gethostname()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live = tmp_path / f"shard-00001.h5.tmp-{host}-{child.pid}-aaaa"
        dead = tmp_path / f"shard-00001.h5.tmp-{host}-{2**22 + 12345}-bbbb"
        remote_new = tmp_path / "shard-00001.h5.tmp-otherhost-77-cccc"
        remote_old = tmp_path / "shard-00001.h5.tmp-otherhost-78-dddd"
        for tmp in (live, dead, remote_new, remote_old):
            tmp.write_bytes(b"partial")
        os.utime(remote_old, (0, 0))  # untouched for decades: its writer is gone
        assert remove_stale_tmp(path) == 2
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, remote_new.name])
    finally:
        child.kill()
        child.wait()


def test_a_damaged_string_dataset_is_named_too(tmp_path):
    path = write(tmp_path / "shard-00000.h5", ["a", "b", "c"], fail=(1,))
    flip_byte_in_chunk(path, "failure", 0)
    with (
        h5py.File(path, "r") as f,
        pytest.raises(ShardReadError, match=rf"{path}: dataset failure is damaged"),
    ):
        read_rows(f["failure"], as_str=True)
    assert check_shard(path, "p1", ["a", "b", "c"], verify="quick").reason.startswith(
        "dataset failure is damaged"
    )
