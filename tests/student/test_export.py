"""ONNX export: the contract per variant x target, the FP16/INT8 copies, the manifest, refusals."""

from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import pytest
import torch
from skimage import data

from edgedepth.student.deploy import onnx_checks, parity
from edgedepth.student.deploy.calibration import to_export_input
from edgedepth.student.deploy.export import ExportModel, export_onnx
from edgedepth.student.model.checkpoint import load_student, save_checkpoint
from edgedepth.student.model.config import ModelConfig
from edgedepth.student.model.network import VARIANTS
from tests.student.labelfolder import make_label_folder

SIZE = (64, 96)
TARGETS = ["trt8", pytest.param("trt10", marks=pytest.mark.slow)]


def _images() -> list[np.ndarray]:
    return [np.ascontiguousarray(data.stereo_motorcycle()[0]), data.astronaut(), data.chelsea()]


def _checkpoint(path, variant="L", seg=True):
    """Random weights with batch-norm statistics from real images, so the depth varies."""
    torch.manual_seed(0)
    cfg = ModelConfig(variant=variant, seg=seg, input_size=(320, 480))
    model = cfg.build().train()
    mean, std = np.array(cfg.mean, np.float32), np.array(cfg.std, np.float32)
    with torch.no_grad():
        for image in _images() * 2:
            x = cv2.resize(image, (160, 96), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
            model(torch.from_numpy(((x - mean) / std).transpose(2, 0, 1)[None].copy()))
    save_checkpoint(path, {"model_config": cfg.to_dict(), "model": model.state_dict(), "epoch": 0, "step": 0})
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("ckpt") / "student.pt")


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    root = tmp_path_factory.mktemp("labels")
    return make_label_folder(root, {"2011_09_26_drive_0001_sync": 2}, lidar=False, seg=False)


@pytest.fixture(scope="module", params=TARGETS)
def exported(request, ckpt, labels, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"export_{request.param}")
    manifest = export_onnx(
        ckpt, out, variants=tuple(VARIANTS), size=SIZE, target=request.param,
        precisions=("fp32", "fp16", "int8"), with_seg=True, calib_labels=labels, calib_frames=4,
        progress=False,
    )  # fmt: skip
    return request.param, out, manifest


def _entry(manifest, variant, precision, runtime=None):
    runtime = runtime or ("tensorrt" if precision == "int8" else "any")
    found = [
        f for f in manifest["files"]
        if f["variant"] == variant and f["precision"] == precision and f["runtime"] == runtime
    ]  # fmt: skip
    assert len(found) == 1, (variant, precision, [f["path"] for f in manifest["files"]])
    return found[0]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_contract(exported, ckpt, variant):
    target, out, _ = exported
    manifest = json.loads((out / "manifest.json").read_text())
    entry = _entry(manifest, variant, "fp32")
    path = out / entry["path"]
    assert entry["path"] == f"student_{variant}_{target}_fp32.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [entry["opset"]]
    assert entry["opset"] == {"trt8": 13, "trt10": 20}[target]
    assert model.ir_version == entry["ir_version"] <= {"trt8": 7, "trt10": 10}[target]
    shuffles = [n for n in model.graph.node if n.op_type == "DepthToSpace"]
    assert len(shuffles) == VARIANTS[variant]
    assert all(
        onnx.helper.get_attribute_value(a) == b"CRD"
        for n in shuffles
        for a in n.attribute
        if a.name == "mode"
    )
    assert set(entry["ops"]) <= onnx_checks.ALLOWED_OPS[target]
    assert not [p for p in out.iterdir() if p.suffix == ".data"]
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    dtype = {"trt8": "float32", "trt10": "uint8"}[target]
    assert entry["input"] == {"name": "image", "dtype": dtype, "range": [0, 255],
                              "shape": [1 if target == "trt8" else "batch", 3, *SIZE]}  # fmt: skip
    assert entry["outputs"] == ["depth", "classes"]
    assert (
        entry["checkpoint_sha256"] == manifest["checkpoint_sha256"] and len(entry["checkpoint_sha256"]) == 64
    )
    assert entry["model_config"]["variant"] == variant
    assert entry["parity"]["max_rel_err"] < 1e-4
    commands = (out / entry["commands"]).read_text()
    assert f"trtexec --onnx={path.name}" in commands and "--fp16" in commands and "polygraphy run" in commands

    # the L checkpoint's weights, cut to the variant, against the file, on a fresh real image
    net, cfg = load_student(ckpt, variant, return_classes=True)
    wrapper = ExportModel(net, cfg, with_seg=True)
    image = to_export_input(data.coffee(), SIZE, dtype)
    sess = onnx_checks.session(path)
    depth, classes = onnx_checks.run(sess, image)
    with torch.no_grad():
        want_depth, want_classes = wrapper(torch.from_numpy(image))
    assert depth.shape == (1, 1, *cfg.with_size(SIZE).output_size) and depth.dtype == np.float32
    assert classes.dtype == np.int32 and classes.shape == depth.shape[:1] + depth.shape[2:]
    assert onnx_checks.max_rel_err(depth, want_depth.numpy()) < 1e-4
    assert np.mean(classes == want_classes.numpy()) > 0.99
    assert float(want_depth.std()) > 0  # the test is not trivially passing on a constant map
    if target == "trt10":  # dynamic batch
        two = np.concatenate([image, image])
        assert onnx_checks.run(sess, two)[0].shape[0] == 2


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_copies_within_bounds(exported, variant):
    target, out, manifest = exported
    data_ = manifest.to_dict()
    int8 = _entry(data_, variant, "int8")
    assert int8["parity"]["abs_rel"] <= onnx_checks.INT8_ABS_REL_MAX
    assert int8["parity"]["rmse"] <= onnx_checks.INT8_RMSE_MAX
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(int8["ops"])
    assert len(int8["calibration"]["frame_ids"]) == 2 and "all 2" in int8["calibration"]["note"]
    assert "--int8" in (out / int8["commands"]).read_text()
    assert any("all 2 labelled frame" in note for note in data_["notes"])

    # the TensorRT form: int8 Q/DQ with zero point 0 only; ONNX Runtime's form: uint8 activations,
    # which TensorRT would refuse; both from the same calibration frames, both near the FP32 depth
    trt_model = onnx.load(str(out / int8["path"]))
    onnx_checks.check_tensorrt_qdq(trt_model, int8["path"])
    ort_entry = _entry(data_, variant, "int8", "onnxruntime")
    assert ort_entry["path"] == f"student_{variant}_{target}_int8_ort.onnx"
    assert ort_entry["calibration"]["frame_ids"] == int8["calibration"]["frame_ids"]
    assert ort_entry["parity"]["abs_rel"] <= onnx_checks.INT8_ABS_REL_MAX
    ort_model = onnx.load(str(out / ort_entry["path"]))
    with pytest.raises(ValueError, match="TensorRT needs int8 with zero point 0"):
        onnx_checks.check_tensorrt_qdq(ort_model, ort_entry["path"])
    assert "refuses it" in (out / ort_entry["commands"]).read_text()
    image = to_export_input(data.coffee(), SIZE, int8["input"]["dtype"])
    a = onnx_checks.run(onnx_checks.session(out / int8["path"]), image)[0]
    b = onnx_checks.run(onnx_checks.session(out / ort_entry["path"]), image)[0]
    assert onnx_checks.depth_figures(b, a)["abs_rel"] < 2 * onnx_checks.INT8_ABS_REL_MAX
    if target == "trt8":
        assert not [f for f in data_["files"] if f["precision"] == "fp16"]
        assert any("builder flag" in note for note in data_["notes"])
        return
    fp16 = _entry(data_, variant, "fp16")
    assert fp16["parity"]["abs_rel"] <= onnx_checks.FP16_ABS_REL_MAX
    assert fp16["parity"]["rmse"] <= onnx_checks.FP16_RMSE_MAX
    model = onnx.load(str(out / fp16["path"]))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert "--stronglyTyped" in (out / fp16["commands"]).read_text()


def test_bad_inputs(ckpt, tmp_path):
    def fails(match, **kwargs):
        args = {"checkpoint": ckpt, "out_dir": tmp_path / "out", "variants": ("XS",), "size": SIZE,
                "target": "trt8", "progress": False, **kwargs}  # fmt: skip
        with pytest.raises(ValueError, match=match) as err:
            export_onnx(**args)
        assert "\n" not in str(err.value)

    fails("--calib-labels", precisions=("int8",))
    fails("not a multiple of 32", size=(100, 96))
    fails("unknown target", target="trt7")
    small = _checkpoint(tmp_path / "m.pt", variant="M")
    fails("variant L needs 4", checkpoint=small, variants=("L",))
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    fails("not an edgedepth student checkpoint", checkpoint=tmp_path / "other.pt")
    noseg = _checkpoint(tmp_path / "noseg.pt", seg=False)
    fails("segmentation head", checkpoint=noseg, with_seg=True)


def test_broken_parity_fails(ckpt, tmp_path, monkeypatch):
    monkeypatch.setattr(parity, "FP32_MAX_REL_ERR", 0.0)
    with pytest.raises(ValueError, match=r"student_XS_trt8_fp32.onnx: FP32 max relative error"):
        export_onnx(ckpt, tmp_path, variants=("XS",), size=SIZE, target="trt8", progress=False)
    assert not (tmp_path / "manifest.json").exists()
    assert not list(tmp_path.glob("*.onnx")), "a file that failed its parity check is not left as good"


def test_nan_is_never_a_parity_match():
    """max(0.0, nan) is 0.0 in Python: NaN output used to read as "max rel err 0"."""
    ref = np.ones((1, 1, 4, 4), np.float32)
    assert onnx_checks.max_rel_err(ref, ref) == 0.0
    for bad in (np.full_like(ref, np.nan), np.full_like(ref, np.inf)):
        assert onnx_checks.max_rel_err(bad, ref) == np.inf
        assert onnx_checks.max_rel_err(ref, bad) == np.inf
        assert onnx_checks.max_rel_err(bad, bad) == np.inf


def test_depth_only_and_dtype_override(ckpt, tmp_path):
    manifest = export_onnx(
        ckpt, tmp_path, variants=("xs",), size=SIZE, target="trt8", input_dtype="uint8", progress=False
    )
    (entry,) = manifest.files
    assert entry["outputs"] == ["depth"] and entry["input"]["dtype"] == "uint8"
    sess = onnx_checks.session(tmp_path / entry["path"])
    image = to_export_input(data.coffee(), SIZE, "uint8")
    (depth,) = onnx_checks.run(sess, image)
    assert depth.shape == (1, 1, SIZE[0] // 16, SIZE[1] // 16) and np.all(depth > 0)
    assert json.loads((tmp_path / "manifest.json").read_text())["files"][0]["path"] == entry["path"]


@pytest.mark.parametrize("target", TARGETS)
def test_keras_style_padding_becomes_conv_pads(tmp_path, target):
    """A keras-style encoder's bottom/right padding is folded into the convolutions' own pads (no Pad
    and no shape chain in the trt8 file), with the outputs unchanged."""
    cfg = ModelConfig(input_size=SIZE).with_encoder_style("keras")
    torch.manual_seed(0)
    model = cfg.build().eval()
    save_checkpoint(tmp_path / "k.pt", {"model_config": cfg.to_dict(), "model": model.state_dict()})
    manifest = export_onnx(
        tmp_path / "k.pt", tmp_path / "out", ("L",), SIZE, target, ("fp32",), progress=False
    )
    graph = onnx.load(str(tmp_path / "out" / f"student_L_{target}_fp32.onnx")).graph
    ops = {node.op_type for node in graph.node}
    assert "Pad" not in ops and ops <= onnx_checks.ALLOWED_OPS[target]
    asymmetric = [n for n in graph.node if n.op_type == "Conv" and any(
        a.name == "pads" and list(a.ints) == [0, 0, 1, 1] for a in n.attribute)]  # fmt: skip
    assert len(asymmetric) == 5  # the stem and the four stride-2 depthwise convolutions
    assert manifest.files[0]["parity"]["max_rel_err"] < onnx_checks.FP32_MAX_REL_ERR
