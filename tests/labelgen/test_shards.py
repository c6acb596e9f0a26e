"""HDF5 shards: atomic writes, the validity check, the joined reader."""

from __future__ import annotations

import os
import pickle
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from edgedepth.common.processes import pid_alive
from edgedepth.labelgen.plan import plan_shards, write_plan
from edgedepth.labelgen.reader import LabelReader
from edgedepth.labelgen.shards import (
    DatasetSpec,
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


def test_a_killed_writer_left_as_a_zombie_counts_as_gone(tmp_path):
    """In a container whose PID 1 never reaps, a killed worker stays a zombie: its file is stale."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    child.kill()
    deadline = time.monotonic() + 10
    while "Z" not in Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]:
        assert time.monotonic() < deadline, "the killed child never became a zombie"
        time.sleep(0.01)
    try:
        tmp = tmp_path / f"shard-00001.h5.tmp-{socket.gethostname()}-{child.pid}-aaaa"
        tmp.write_bytes(b"partial")
        assert not pid_alive(child.pid)
        assert remove_stale_tmp(tmp_path / "shard-00001.h5") == 1 and not tmp.exists()
    finally:
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


# ---- the schema, checked on read ---------------------------------------------------------------

STEREO = {
    "disparity": DatasetSpec((4, 6), "uint16", attrs={"scale": 1 / 256}),
    "depth": DatasetSpec((4, 6), "float16"),
    "valid": DatasetSpec((4, 6), "bool"),
}
IDS = ["a", "b", "c"]


def sgbm_shard(folder, stage="sgbm", attrs=None):
    """A complete shard as edgedepth.labelgen.run writes an sgbm one (4x6 frames, row 1 failed)."""
    path = folder / stage / "shard-00000.h5"
    attrs = {"stage": "sgbm", "plan_id": "p1", "calibration": {"image_size": [4, 6]}, **(attrs or {})}
    with ShardWriter(path, IDS, STEREO, attrs) as w:
        for i in (0, 2):
            w.write(i, {"disparity": np.full((4, 6), 512 * (i + 1)), "depth": np.full((4, 6), 5.0 + i),
                        "valid": np.ones((4, 6), bool)})  # fmt: skip
        w.fail(1, "bad frame")
    return path


def _replace(f, name, data=None, **options):
    """Dataset ``name`` recreated from ``data`` (default: its content) with h5py ``options``."""
    data = f[name][()] if data is None else data
    del f[name]
    f.create_dataset(name, data=data, **options)


CHECKED = {"chunks": (1, 4, 6), "compression": "gzip", "fletcher32": True}


def _virtual(f, tmp):
    with h5py.File(tmp / "source.h5", "w") as src:
        src["depth"] = f["depth"][()]
    layout = h5py.VirtualLayout(shape=(3, 4, 6), dtype="float16")
    layout[:] = h5py.VirtualSource(str(tmp / "source.h5"), "depth", shape=(3, 4, 6))
    del f["depth"]
    f.create_virtual_dataset("depth", layout, fillvalue=0)


def _external(f, tmp):
    with h5py.File(tmp / "other.h5", "w") as other:
        other.create_dataset("depth", data=f["depth"][()], **CHECKED)
    del f["depth"]
    f["depth"] = h5py.ExternalLink(str(tmp / "other.h5"), "/depth")


BROKEN_SHARDS = {
    "external-link": (_external, r"depth is an external link to .*other\.h5"),
    "soft-link": (lambda f, t: (f.__delitem__("depth"), f.__setitem__("depth", h5py.SoftLink("/valid"))),
                  "depth is a soft link"),
    "virtual": (_virtual, "dataset depth is a virtual dataset"),
    "no-fletcher32": (lambda f, t: _replace(f, "depth", chunks=(1, 4, 6), compression="gzip"),
                      "dataset depth has no Fletcher-32 checksum"),
    "contiguous": (lambda f, t: _replace(f, "depth"), "dataset depth is not chunked"),
    "not-gzip": (lambda f, t: _replace(f, "depth", chunks=(1, 4, 6), fletcher32=True),
                 "dataset depth is not gzip-compressed"),
    "lzf": (lambda f, t: _replace(f, "depth", chunks=(1, 4, 6), compression="lzf", fletcher32=True),
            "dataset depth uses HDF5 filter 32000"),
    "string-depth": (lambda f, t: _replace(f, "depth", np.full((3, 4, 6), b"deep"), **CHECKED),
                     r"dataset depth holds \|S4, not float16"),
    "int64-depth": (lambda f, t: _replace(f, "depth", np.zeros((3, 4, 6), np.int64), **CHECKED),
                    "dataset depth holds int64, not float16"),
    "rows": (lambda f, t: _replace(f, "depth", np.zeros((2, 4, 6), np.float16), **CHECKED),
             "dataset depth has 2 rows, not 3"),
    "row-shape": (lambda f, t: _replace(f, "depth", np.zeros((3, 5, 6), np.float16), chunks=(1, 5, 6),
                                        compression="gzip", fletcher32=True),
                  r"dataset depth rows are \(5, 6\), not \(4, 6\) \(the shard's image size\)"),
    "row-rank": (lambda f, t: _replace(f, "depth", np.zeros((3, 24), np.float16), chunks=(1, 24),
                                       compression="gzip", fletcher32=True),
                 r"dataset depth rows are \(24,\), not \('H', 'W'\)"),
    "chunks": (lambda f, t: _replace(f, "depth", chunks=(3, 4, 6), compression="gzip", fletcher32=True),
               r"dataset depth is chunked as \(3, 4, 6\), not one frame a chunk \(1, 4, 6\)"),
    "frame-id-numbers": (lambda f, t: _replace(f, "frame_id", np.arange(3), chunks=True, fletcher32=True),
                         "dataset frame_id holds int64, not fixed-length UTF-8 strings"),
    "frame-id-vlen": (lambda f, t: _replace(f, "frame_id", IDS, dtype=h5py.string_dtype(), chunks=True),
                      "dataset frame_id holds object, not fixed-length UTF-8 strings"),
    "ok-numbers": (lambda f, t: _replace(f, "ok", np.ones(3, np.uint8), chunks=True, fletcher32=True),
                   "dataset ok holds uint8, not bool"),
    "failure-missing": (lambda f, t: f.__delitem__("failure"), "dataset failure is missing"),
    "extra-group": (lambda f, t: f.create_group("extras"), r"extras is a group \(a shard holds datasets only\)"),
    "group-for-dataset": (lambda f, t: (f.__delitem__("depth"), f.create_group("depth")), "depth is a group"),
    "named-datatype": (lambda f, t: f.__setitem__("kind", np.dtype("f4")), "kind is not a dataset"),
    "dataset-missing": (lambda f, t: f.__delitem__("valid"), r"stage sgbm lacks dataset valid \(expected"),
    "dataset-extra": (lambda f, t: f.create_dataset("confidence", data=f["depth"][()], **CHECKED),
                      "stage sgbm has dataset confidence"),
    "scale-wrong": (lambda f, t: f["disparity"].attrs.__setitem__("scale", 1.0),
                    "dataset disparity: scale attribute 1.0 is not 0.00390625"),
    "scale-text": (lambda f, t: f["disparity"].attrs.__setitem__("scale", "x"), "scale attribute 'x' is not"),
    "scale-missing": (lambda f, t: f["disparity"].attrs.__delitem__("scale"),
                      "dataset disparity lacks its scale attribute"),
    "scale-added": (lambda f, t: f["depth"].attrs.__setitem__("scale", 2.0),
                    "dataset depth has a scale attribute its stage does not write"),
    "ok-row-without-data": (lambda f, t: _replace(f, "depth", np.zeros((0, 4, 6)), maxshape=(None, 4, 6),
                                                  dtype="float16", **CHECKED) or f["depth"].resize(3, axis=0),
                            "dataset depth stores 0 frames, but 2 are marked ok"),
    "stage-attribute": (lambda f, t: f.attrs.__setitem__("stage", "psmnet"),
                        "written as stage psmnet, not sgbm"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BROKEN_SHARDS))
@pytest.mark.parametrize("verify", ["quick", "full"])
def test_a_shard_that_breaks_the_schema_is_invalid_at_both_levels(tmp_path, name, verify):
    path = sgbm_shard(tmp_path)
    assert check_shard(path, "p1", IDS, verify=verify).complete
    breaks, reason = BROKEN_SHARDS[name]
    with h5py.File(path, "a") as f:
        breaks(f, tmp_path)
    status = check_shard(path, "p1", IDS, verify=verify)
    assert status.state == "invalid" and re.search(reason, status.reason), status
    assert "\n" not in status.reason


def test_the_image_size_comes_from_the_plan_first(tmp_path):
    path = sgbm_shard(tmp_path, attrs={"calibration": {}})  # no size in the attributes: rank only
    assert check_shard(path, "p1", IDS).complete
    status = check_shard(path, "p1", IDS, image_size=(375, 1242))
    assert status.reason == "dataset disparity rows are (4, 6), not (375, 1242) (the shard's image size)"
    assert check_shard(path, "p1", IDS, image_size=(4, 6)).complete


def test_the_schema_table_is_what_the_stages_write(kitti_tree, tmp_path):
    """STAGE_SCHEMAS against every stage's datasets(); the corrected stage against calib apply's
    real output, which passes a full check like every shard labelgen run writes."""
    from edgedepth.calib.apply import write_corrected
    from edgedepth.calib.fit import fit_from_labels
    from edgedepth.labelgen.folder import LabelFolder
    from edgedepth.labelgen.run import run_stages
    from edgedepth.labelgen.shard_schema import STAGE_SCHEMAS, stage_schema
    from edgedepth.labelgen.stages import STAGES, make_stage

    options = {"psmnet": {"checkpoint": "x.tar"}, "seg": {"checkpoint": "x.pth"}}
    variants = [(name, options.get(name, {})) for name in STAGES]
    variants += [("lidar", {"cams": (2, 3)}), ("images", {"resize": (32, 48)})]
    assert set(STAGE_SCHEMAS) == set(STAGES)
    for name, opts in variants:
        specs = make_stage(name, opts).datasets((375, 1242))
        schema = STAGE_SCHEMAS[name]
        size = opts.get("resize", (375, 1242))
        assert set(specs) <= set(schema) and {n for n, r in schema.items() if r.required} <= set(specs)
        for key, spec in specs.items():
            rule = schema[key]
            assert (np.dtype(spec.dtype), spec.shape) == (np.dtype(rule.dtype), rule.row_shape(size)), key
            assert spec.attrs.get("scale") == rule.scale, key
    plan = plan_shards(kitti_tree, drives=["2011_09_26_drive_0002"])
    labels = LabelFolder(tmp_path / "labels")
    write_plan(plan, labels)
    run_stages(labels, ["images", "lidar", "sgbm"], workers=1, progress=False,
               stage_options={"sgbm": {"num_disparities": 32}})  # fmt: skip
    lut = fit_from_labels(labels, "sgbm", holdout=0, min_count=1)
    write_corrected(labels, lut, "sgbm")
    shard = plan.shards[0]
    for stage in ("images", "lidar", "sgbm", "sgbm_corrected"):
        path = shard_path(labels.given, stage, shard.name)
        assert check_shard(path, plan.plan_id, shard.frame_ids, image_size=shard.image_size).complete, stage
    with h5py.File(shard_path(labels.given, "sgbm_corrected", shard.name)) as f:
        assert set(f) - {"frame_id", "ok", "failure"} == set(stage_schema("sgbm_corrected")) == {"depth"}
        assert f["depth"].dtype == np.float16


def test_shard_and_plan_modules_import_no_torch():
    code = "import sys, edgedepth.labelgen.shards, edgedepth.labelgen.plan; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_readers_give_one_line_for_a_group_or_text_where_numbers_belong(tmp_path):
    from edgedepth.labelgen.shards import decode

    path = sgbm_shard(tmp_path)
    with h5py.File(path, "a") as f:
        f.create_group("extras")
        f["text"] = np.full((3, 4, 6), b"deep")
        f["depth"].attrs["scale"] = float("nan")
    with h5py.File(path, "r") as f:
        with pytest.raises(ShardReadError, match=rf"{path}: extras is a group, not a dataset; rerun"):
            read_rows(f["extras"], 0)
        with pytest.raises(ShardReadError, match=r"dataset text holds \|S4, not numbers"):
            decode(f["text"], read_rows(f["text"], 0))
        with pytest.raises(ShardReadError, match=r"dataset ok cannot be read as UTF-8 text"):
            read_rows(f["ok"], as_str=True)
        with pytest.raises(ShardReadError, match=r"dataset depth: scale attribute nan is not a positive"):
            decode(f["depth"], read_rows(f["depth"], 0))


def test_a_reader_refuses_a_folder_holding_a_broken_shard_in_one_line(kitti_tree, tmp_path):
    plan = plan_shards(kitti_tree, drives=["2011_09_26_drive_0002"])
    write_plan(plan, tmp_path)
    shard = plan.shards[0]
    path = write(shard_path(tmp_path, "one", shard.name), shard.frame_ids, plan_id=plan.plan_id)
    with h5py.File(path, "a") as f:
        f.create_group("extras")
    with pytest.raises(ValueError, match=r"one/shard-00000\.h5: shard is invalid \(extras is a group") as err:
        LabelReader(tmp_path, ["one"])
    assert "\n" not in str(err.value)


def test_full_verification_names_the_row_whose_data_is_missing(tmp_path):
    """An ok row must have a stored chunk: written rows always do (zeros included), failed rows never."""
    path = sgbm_shard(tmp_path)
    with h5py.File(path, "a") as f:
        data = f["depth"][()]
        del f["depth"]
        f.create_dataset("depth", shape=(3, 4, 6), dtype="float16", **CHECKED)  # no chunk stored
        f["depth"][0] = data[0]
        f["depth"][1] = data[1]  # the failed row stored, the ok row 2 not: the count still matches
    status = check_shard(path, "p1", IDS)
    assert status.reason.startswith("dataset depth row 2 is damaged (marked ok, but no data is stored)")
    assert check_shard(path, "p1", IDS, verify="quick").complete  # the count alone cannot tell


# ---- full verification: chunk checksums --------------------------------------------------------


def fletcher32_reference(data: bytes) -> int:
    """HDF5's H5_checksum_fletcher32, transcribed."""
    sum1 = sum2 = 0
    words, i = len(data) // 2, 0
    while words:
        block = min(words, 360)
        words -= block
        for _ in range(block):
            sum1 += (data[i] << 8) | data[i + 1]
            i += 2
            sum2 += sum1
        sum1, sum2 = (sum1 & 0xFFFF) + (sum1 >> 16), (sum2 & 0xFFFF) + (sum2 >> 16)
    if len(data) % 2:
        sum1 += data[i] << 8
        sum2 += sum1
        sum1, sum2 = (sum1 & 0xFFFF) + (sum1 >> 16), (sum2 & 0xFFFF) + (sum2 >> 16)
    sum1, sum2 = (sum1 & 0xFFFF) + (sum1 >> 16), (sum2 & 0xFFFF) + (sum2 >> 16)
    return (sum2 << 16) | sum1


def test_the_checksum_is_hdf5s_fletcher32(tmp_path):
    from edgedepth.labelgen.shard_schema import fletcher32_matches

    rng = np.random.default_rng(0)
    samples = [b"", b"\x01", b"\xff" * 7, b"\xff" * 65535 * 2, bytes(1000)]
    samples += [rng.bytes(n) for n in (1, 2, 3, 359 * 2, 361 * 2 + 1, 65536 * 2 + 3, 70001)]
    for data in samples:
        chunk = data + fletcher32_reference(data).to_bytes(4, "little")
        assert fletcher32_matches(chunk), len(data)
        if data:
            damaged = bytearray(chunk)
            damaged[len(data) // 2] ^= 0x10
            assert not fletcher32_matches(bytes(damaged)), len(data)
    big = rng.bytes((1 << 21) + 5)  # more than one piece of 2**20 words
    assert fletcher32_matches(big + fletcher32_reference(big).to_bytes(4, "little"))
    assert not fletcher32_matches(b"\x00\x01")
    path = sgbm_shard(tmp_path)  # and HDF5's own checksums, as written
    with h5py.File(path) as f:
        for name in f:
            info = f[name].id.get_chunk_info(0)
            assert fletcher32_matches(f[name].id.read_direct_chunk(info.chunk_offset)[1]), name


def test_full_verification_finds_a_flipped_byte_in_any_row_of_any_dataset(tmp_path):
    for dataset in ("disparity", "depth", "valid"):
        for row in (0, 2):
            path = sgbm_shard(tmp_path / f"{dataset}{row}")
            flip_byte_in_chunk(path, dataset, row)
            status = check_shard(path, "p1", IDS)
            assert status.reason.startswith(f"dataset {dataset} row {row} is damaged (Fletcher-32"), status


# ---- the reader's open files -------------------------------------------------------------------


def test_the_reader_keeps_a_bounded_number_of_files_open(kitti_tree, tmp_path):
    plan = plan_shards(kitti_tree, shard_size=1)  # eleven shards
    write_plan(plan, tmp_path)
    for stage in ("one", "two"):
        for shard in plan.shards:
            write(shard_path(tmp_path, stage, shard.name), shard.frame_ids, plan_id=plan.plan_id)
    unbounded = LabelReader(tmp_path, ["one", "two"], max_open=1000)
    expected = [unbounded[i] for i in range(len(unbounded))]
    assert unbounded.open_files == 22
    reader = LabelReader(tmp_path, ["one", "two"], max_open=3)
    for order in (range(len(reader)), reversed(range(len(reader))), [0, 5, 0, 9, 0, 5]):
        for i in order:
            item = reader[i]
            assert item.keys() == expected[i].keys() and item["frame_id"] == expected[i]["frame_id"]
            assert all(np.array_equal(item[k], expected[i][k]) for k in item if k != "frame_id")
            assert reader.open_files <= 3
    assert reader.all_ok().all() and reader.open_files <= 3
    open_handles = [f for f in reader._files.values() if f.id.valid]
    assert len(open_handles) == reader.open_files == 3  # the evicted ones are closed, not just dropped
    copy = pickle.loads(pickle.dumps(reader))
    assert copy.open_files == 0 and copy.max_open == 3 and copy[4]["frame_id"] == expected[4]["frame_id"]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_open must be a positive integer"):
            LabelReader(tmp_path, ["one"], max_open=bad)
    reader.close(), unbounded.close(), copy.close()


def test_a_write_that_fails_on_sync_or_leaves_a_frame_unstored_is_never_renamed(tmp_path, monkeypatch):
    import errno

    specs = {"depth": DatasetSpec((4, 6), "float32")}
    target = tmp_path / "one" / "shard-00000.h5"

    def full_disk(fd):  # as NFS reports it: the written bytes do not fit when they are synced
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with ShardWriter(target, ["a"], specs, {}) as writer:
        writer.write(0, {"depth": np.ones((4, 6), np.float32)})
        assert not target.parent.exists() or not list(target.parent.iterdir())  # built in memory
    target.unlink()
    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", full_disk)
        with pytest.raises(OSError) as caught, ShardWriter(target, ["a"], specs, {}) as writer:
            writer.write(0, {"depth": np.ones((4, 6), np.float32)})
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert not target.exists() and not list(target.parent.glob("*.tmp-*"))
    with pytest.raises(
        OSError, match="written incompletely .dataset depth stores 0 frames, but 1 are marked ok"
    ):
        with ShardWriter(target, ["a"], specs, {}) as writer:
            writer.ok[0] = True  # marked done, its chunk never written (as after a lost write)
    assert not target.exists() and not list(target.parent.glob("*.tmp-*"))
