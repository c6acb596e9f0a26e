"""`edgedepth demo` on other data than the embedded scene (each test its own short run, so they
spread over pytest-xdist workers): both optional teachers, the real KITTI frames, a user's rig tree."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_demo_with_both_optional_teachers(tmp_path):
    """With PSMNet (the real KITTI 2015 checkpoint) and a segmentation checkpoint (a random VainF
    DeepLab), nothing is skipped: PSMNet labels depth for the bias table and the student, the student
    learns classes too, and the report shows its class map. Short settings: this checks the paths."""
    from dataclasses import replace

    import torch

    from edgedepth.demo import MOTORCYCLE, run_demo
    from edgedepth.labelgen.teachers.deeplab_vainf import build_vainf_deeplab
    from edgedepth.student.model.checkpoint import load_student
    from tests.labelgen.conftest import kitti2015_checkpoint

    torch.manual_seed(0)
    seg = tmp_path / "best_deeplabv3plus_mobilenet_cityscapes_os16.pth"
    torch.save({"model_state": build_vainf_deeplab("deeplabv3plus_mobilenet").state_dict()}, seg)
    quick = replace(MOTORCYCLE, epochs=1, iters_per_epoch=3, batch_size=2, train_size=(128, 192),
                    export_size=(128, 192), bench_repeats=3)  # fmt: skip
    result = run_demo(tmp_path / "out", psmnet_checkpoint=kitti2015_checkpoint(), seg_checkpoint=seg,
                      workers=1, progress=False, log=lambda line: None, settings=quick)  # fmt: skip
    steps = {s.key: s for s in result.steps}
    assert not [s.key for s in result.steps if s.status != "done"]
    assert "--stages images,lidar,sgbm,psmnet,seg" in steps["labels"].command
    assert {"sgbm_abs_rel", "psmnet_abs_rel"} <= set(steps["teachers"].figures_measured)
    assert "--teacher psmnet" in steps["calib"].command and (tmp_path / "out" / "lut_psmnet.json").is_file()
    assert "--no-seg" not in steps["train"].command
    _, config = load_student(tmp_path / "out" / "run" / "best.pt")
    assert config.seg
    assert "student class map" in [f.caption for f in steps["predict"].figures]
    assert (tmp_path / "out" / "predict" / "0000_classes.png").is_file()


QUICK = {"epochs": 1, "iters_per_epoch": 3, "batch_size": 2, "bench_repeats": 3}


@pytest.mark.slow
def test_demo_on_kitti_frames(kitti_sample, tmp_path, monkeypatch):
    """`--data-root` on a KITTI raw tree: the same chain on a real frame, with KITTI's settings (1 m
    bins over 1-80 m), KITTI's annotated depth as the ground truth and the Garg crop. Short settings."""
    from dataclasses import replace

    from edgedepth.demo import KITTI, run_demo

    monkeypatch.chdir(tmp_path)  # no weights/ folder here: PSMNet is skipped
    quick = replace(KITTI, train_size=(128, 416), export_size=(128, 416), **QUICK)
    result = run_demo(tmp_path / "out", data_root=kitti_sample, workers=1, progress=False,
                      log=lambda line: None, settings=quick)  # fmt: skip
    steps = {s.key: s for s in result.steps}
    assert result.data == f"KITTI raw data at {kitti_sample}" and result.layout == "kitti"
    assert "data" not in [p.name for p in (tmp_path / "out").iterdir()]  # the user's tree is used as is
    assert "(kitti layout), gt annotated, crop garg" in steps["teachers"].text
    assert steps["teachers"].figures_measured["sgbm_abs_rel"] < 0.06  # 0.030 on this frame
    assert "--bin-width 1.0 --min-depth 1.0 --max-depth 80.0" in steps["calib"].command
    assert steps["calib"].figures_measured["populated_bins"] >= 5
    split = tmp_path / "out" / "split.txt"
    assert f"--data-root {kitti_sample} --split {split} --gt annotated --device" in steps["eval"].command
    assert split.read_text() == "2011_09_26/2011_09_26_drive_0001_sync 5 l\n"
    assert (tmp_path / "out" / "report.html").is_file()


@pytest.mark.slow
def test_demo_on_a_users_rig_tree(kitti_sample, tmp_path, monkeypatch):
    """`--data-root` on a rig tree (the KITTI sample imported with `data import kitti-depth`): the
    layout is detected, the depth range comes from its calib.json, the ground truth is its depth_gt,
    and a frame list picks the frames. Short settings."""
    from dataclasses import replace

    from edgedepth.demo import RIG, run_demo
    from edgedepth.labelgen.importers import import_kitti_depth

    monkeypatch.chdir(tmp_path)
    rig = tmp_path / "rig"
    import_kitti_depth(kitti_sample, rig, progress=False)
    frames = tmp_path / "frames.txt"
    frames.write_text("# one frame\n2011_09_26_drive_0001_sync/0000000005\n")
    quick = replace(RIG, train_size=(128, 416), export_size=(128, 416), min_count=20, **QUICK)
    result = run_demo(tmp_path / "out", data_root=rig, split_file=frames, workers=1, progress=False,
                      log=lambda line: None, settings=quick)  # fmt: skip
    steps = {s.key: s for s in result.steps}
    assert result.data == f"rig-layout data at {rig}" and result.layout == "rig"
    assert (result.settings.min_depth, result.settings.max_depth) == (1.0, 80.0)
    assert result.settings.depth_source == "calib.json depth_range_m"
    assert "--bin-width 2.5 --min-depth 1.0 --max-depth 80.0" in steps["calib"].command  # about 30 bins
    assert f"labelgen plan --data-root {rig} --out {tmp_path / 'out' / 'labels'} --split-file {frames}" in (
        steps["plan"].command
    )
    assert "(rig layout), gt depth_gt, crop none" in steps["teachers"].text
    assert steps["teachers"].figures_measured["sgbm_abs_rel"] < 0.06
    assert f"--data-root {rig} --split {frames} --device" in steps["eval"].command
    assert "--gt" not in steps["eval"].command  # the rig default, depth_gt
    assert (tmp_path / "out" / "report.html").is_file()


def test_kitti_root_is_a_deprecated_name_of_data_root(tmp_path):
    from edgedepth.demo import run_demo

    with (
        pytest.warns(DeprecationWarning, match="data_root"),
        pytest.raises(FileNotFoundError, match="nowhere"),
    ):
        run_demo(tmp_path / "out", kitti_root=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="not both"):
        run_demo(tmp_path / "out", data_root=tmp_path, kitti_root=tmp_path)
    with pytest.raises(ValueError, match="needs the data root"):
        run_demo(tmp_path / "out", split_file=tmp_path / "frames.txt")
