"""OpenVINO IR export of the student: the three files, their parity, refusals, timing, bf16, extras."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
import torch
from skimage import data

from edgedepth.student.deploy import parity
from edgedepth.student.deploy.calibration import calibration_frames, to_export_input
from edgedepth.student.deploy.export import ExportModel, export_onnx
from edgedepth.student.deploy.openvino_backend import (
    bf16_supported,
    export_openvino,
    openvino_ops,
    openvino_runner,
    profile_openvino,
    time_openvino,
)
from edgedepth.student.deploy.runtimes import RuntimeMissing
from edgedepth.student.model import load_student
from tests.student.labelfolder import make_label_folder
from tests.student.test_export import _checkpoint, _images

SIZE = (64, 96)
OUT_SIZE = (32, 48)  # variant L: half resolution
DTYPES = ["float32", "uint8"]


@pytest.fixture(scope="module")
def ov():
    return pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("ckpt") / "student.pt")


@pytest.fixture(scope="module")
def wrapper(ckpt):
    net, cfg = load_student(ckpt, "L", return_classes=True)
    return ExportModel(net, cfg, with_seg=True).eval()


@pytest.fixture(scope="module")
def calib_images(tmp_path_factory):
    labels = make_label_folder(
        tmp_path_factory.mktemp("labels"), {"2011_09_26_drive_0001_sync": 2}, lidar=False, seg=False
    )
    return calibration_frames(labels, 4).images


def _dynamic_batch(path):
    """The file with a dynamic batch (as TensorRT 10's files have): dim 0 of input and outputs."""
    model = onnx.load(str(path))
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del model.graph.value_info[:]
    onnx.checker.check_model(model)
    out = path.with_name(path.stem + "_dynamic.onnx")
    onnx.save(model, str(out))
    return out


@pytest.fixture(scope="module")
def bases(ov, ckpt, tmp_path_factory):
    """FP32 ONNX files: trt8-style float32 batch 1, and uint8 with a dynamic batch (trt10-style)."""
    out = tmp_path_factory.mktemp("onnx")
    found = {}
    for dtype in DTYPES:
        export_onnx(
            ckpt, out / dtype, variants=("L",), size=SIZE, target="trt8", with_seg=True,
            input_dtype=dtype, progress=False,
        )  # fmt: skip
        found[dtype] = out / dtype / "student_L_trt8_fp32.onnx"
    found["uint8"] = _dynamic_batch(found["uint8"])
    return found


def _inputs(images, dtype):
    return [to_export_input(image, SIZE, dtype) for image in images]


@pytest.fixture(scope="module", params=DTYPES)
def exported(request, bases, wrapper, calib_images, tmp_path_factory):
    dtype = request.param
    out = tmp_path_factory.mktemp(f"ov_{dtype}")
    entries = export_openvino(
        bases[dtype], out, "student_L", ("fp32", "fp16", "int8"), wrapper,
        _inputs(_images(), dtype), _inputs(calib_images, dtype), progress=False,
    )  # fmt: skip
    return dtype, out, {entry["precision"]: entry for entry in entries}


def test_three_irs_with_the_onnx_input_contract(exported, bases, ov):
    dtype, out, entries = exported
    assert sorted(entries) == ["fp16", "fp32", "int8"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"student_L_{p}.{ext}" for p in entries for ext in ("bin", "xml")
    )  # no temporary file left
    source = onnx.load(str(bases[dtype])).graph.input[0].type.tensor_type.shape.dim[0]
    assert (source.dim_param == "batch") == (dtype == "uint8")  # the uint8 base has a dynamic batch
    for precision, entry in entries.items():
        assert (
            entry["path"] == f"student_L_{precision}.xml" and entry["weights"] == f"student_L_{precision}.bin"
        )
        assert entry["runtime"] == "openvino" and entry["openvino"] == ov.__version__
        assert entry["input"] == {"name": "image", "dtype": dtype, "shape": [1, 3, *SIZE], "range": [0, 255]}
        model = ov.Core().read_model(out / entry["path"])
        assert "image" in model.input(0).get_names()  # (a float32 file's no-op Cast adds its name)
        assert model.input(0).get_partial_shape().is_static  # static batch 1, even from a dynamic base
        assert list(model.input(0).get_shape()) == [1, 3, *SIZE]
        assert model.input(0).get_element_type().to_dtype() == np.dtype(dtype)
        depth_port, classes_port = model.outputs
        assert "depth" in depth_port.get_names() and "classes" in classes_port.get_names()
        assert entry["ops"] == openvino_ops(out / entry["path"])
    assert entries["fp32"]["parity"]["images"] == 4 and entries["fp32"]["parity"]["class_agreement"] >= 0.999
    quantizer = entries["int8"]["quantizer"]
    assert quantizer.startswith("nncf ") and "PERFORMANCE" in quantizer and "subset_size=2" in quantizer
    assert "quantizer" not in entries["fp16"]
    sizes = {p: (out / e["weights"]).stat().st_size for p, e in entries.items()}
    assert sizes["int8"] < sizes["fp16"] < 0.6 * sizes["fp32"]


def test_fp32_ir_equals_pytorch(exported, wrapper, ov):
    dtype, out, _ = exported
    image = to_export_input(data.coffee(), SIZE, dtype)  # a frame the export never saw
    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(out / "student_L_fp32.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    result = compiled({"image": image})
    depth, classes = result[compiled.output("depth")], result[compiled.output("classes")]
    with torch.no_grad():
        want_depth, want_classes = (t.numpy() for t in wrapper(torch.from_numpy(image)))
    assert depth.shape == (1, 1, *OUT_SIZE) and depth.dtype == np.float32
    assert classes.shape == (1, *OUT_SIZE) and classes.dtype == np.int32
    assert want_depth.std() > 1e-3  # not trivially equal on a constant map
    assert np.abs(depth - want_depth).max() / np.abs(want_depth).max() < 1e-4
    assert np.mean(classes == want_classes) >= 0.999
    run_depth, run_classes = openvino_runner(out / "student_L_fp32.xml")(image)  # the runner's order
    np.testing.assert_allclose(run_depth, depth, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(run_classes, classes)


def test_fp16_and_int8_within_bounds_of_fp32(exported):
    dtype, out, entries = exported
    images = _inputs([data.coffee(), data.rocket()], dtype)
    ref = np.concatenate([openvino_runner(out / "student_L_fp32.xml")(x)[0].ravel() for x in images])
    for precision in ("fp16", "int8"):
        run = openvino_runner(out / f"student_L_{precision}.xml")
        got = np.concatenate([run(x)[0].ravel() for x in images])
        abs_rel = float(np.mean(np.abs(got.astype(np.float64) - ref) / ref))
        max_abs_rel, max_rmse = parity.BOUNDS[precision]
        assert abs_rel <= max_abs_rel and float(np.sqrt(np.mean((got - ref) ** 2))) <= max_rmse
        assert entries[precision]["parity"]["abs_rel"] <= max_abs_rel
        assert entries[precision]["parity"]["rmse"] <= max_rmse
    assert "FakeQuantize" in entries["int8"]["ops"]
    assert "FakeQuantize" not in entries["fp32"]["ops"] and "FakeQuantize" not in entries["fp16"]["ops"]


def test_a_parity_failure_removes_both_files(bases, wrapper, tmp_path, monkeypatch):
    real = _inputs(_images()[:1], "float32")
    out = tmp_path / "ov"
    export_openvino(bases["float32"], out, "s", ("fp32", "fp16"), wrapper, real, None, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["s_fp16.bin", "s_fp16.xml", "s_fp32.bin", "s_fp32.xml"]

    monkeypatch.setitem(parity.BOUNDS, "fp16", (0.0, 0.0))  # the earlier good fp16 pair must go too
    with pytest.raises(ValueError, match=r"^s_fp16\.xml: fp16 abs_rel .* vs FP32 exceeds 0\.0$"):
        export_openvino(bases["float32"], out, "s", ("fp32", "fp16"), wrapper, real, None, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["s_fp32.bin", "s_fp32.xml"]

    monkeypatch.setattr(parity, "FP32_MAX_REL_ERR", 0.0)
    with pytest.raises(ValueError, match=r"^s_fp32\.xml: FP32 max relative error .* vs PyTorch >= 0\.0$"):
        export_openvino(bases["float32"], out, "s", ("fp32",), wrapper, real, None, progress=False)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("calib", [None, []])
def test_int8_without_calibration_is_refused_before_any_work(tmp_path, calib):
    out = tmp_path / "ov"
    real = _inputs(_images()[:1], "float32")
    with pytest.raises(ValueError, match=r"^s_int8\.xml: int8 needs calibration inputs") as err:
        export_openvino(
            tmp_path / "model.onnx", out, "s", ("fp32", "int8"), None, real, calib, progress=False
        )
    assert "\n" not in str(err.value) and not out.exists()


def test_inputs_of_the_wrong_layout_are_refused(bases, wrapper, tmp_path):
    out = tmp_path / "ov"
    real = _inputs(_images()[:1], "float32")  # the uint8 file takes uint8
    with pytest.raises(
        ValueError, match=r"_dynamic\.onnx: real input 0 is float32 .* takes uint8 \(1, 3, 64, 96\)"
    ):
        export_openvino(bases["uint8"], out, "s", ("fp32",), wrapper, real, None, progress=False)
    with pytest.raises(ValueError, match="unknown OpenVINO precision bf16"):
        export_openvino(bases["uint8"], out, "s", ("bf16",), wrapper, real, None, progress=False)
    assert not out.exists()


def test_runner_refuses_a_wrong_batch_and_a_bad_hint(exported):
    dtype, out, _ = exported
    run = openvino_runner(out / "student_L_fp32.xml")
    two = np.concatenate(_inputs(_images()[:2], dtype))
    with pytest.raises(
        ValueError, match=r"^student_L_fp32\.xml: takes .* \(1, 3, 64, 96\), got .* \(2, 3, 64, 96\)$"
    ):
        run(two)
    with pytest.raises(ValueError, match="precision hint must be one of f32, bf16"):
        openvino_runner(out / "student_L_fp32.xml", precision_hint="f16")
    with pytest.raises(ValueError, match="no OpenVINO IR here"):
        openvino_runner(out / "missing.xml")


def test_time_and_profile(exported):
    dtype, out, _ = exported
    image = _inputs(_images()[:1], dtype)[0]
    stats = time_openvino(out / "student_L_int8.xml", image, threads=1, repeats=5, warmup=1)
    assert stats["fps"] > 0 and 0 < stats["p10_ms"] <= stats["latency_ms"] <= stats["p90_ms"]
    assert stats["fps"] == pytest.approx(1000 / stats["latency_ms"])
    rows = profile_openvino(out / "student_L_int8.xml", image, top=3, threads=1, runs=2)
    assert 1 <= len(rows) <= 3 and all(ms >= 0 for *_, ms in rows)
    assert [ms for *_, ms in rows] == sorted((ms for *_, ms in rows), reverse=True)
    assert all(name and kind and kernel for name, kind, kernel, _ in rows)


def test_bf16_hint_runs_in_bf16(exported, wrapper):
    if not bf16_supported():
        pytest.skip("this CPU has no native bf16 (OPTIMIZATION_CAPABILITIES lacks BF16)")
    dtype, out, _ = exported
    image = to_export_input(data.coffee(), SIZE, dtype)
    f32 = openvino_runner(out / "student_L_fp32.xml", "f32", threads=1)(image)[0]
    bf16 = openvino_runner(out / "student_L_fp32.xml", "bf16", threads=1)(image)[0]
    assert np.isfinite(bf16).all() and bf16.shape == f32.shape
    assert not np.array_equal(bf16, f32)  # the hint took effect (f32 is the default of the checks)
    assert float(np.mean(np.abs(bf16.astype(np.float64) - f32) / f32)) < 0.05
    stats = time_openvino(
        out / "student_L_fp32.xml", image, threads=1, repeats=3, warmup=1, precision_hint="bf16"
    )
    assert stats["fps"] > 0


@pytest.mark.parametrize("missing", ["openvino", "nncf"])
def test_a_missing_runtime_names_the_pip_line(tmp_path, monkeypatch, missing):
    if missing == "nncf":
        pytest.importorskip("openvino")  # NNCF is asked for after OpenVINO
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"")  # never read: the import fails first
    monkeypatch.setitem(sys.modules, missing, None)
    real = [np.zeros((1, 3, *SIZE), np.uint8)]
    calls = [lambda: export_openvino(onnx_file, tmp_path / "ov", "s", ("fp32", "int8"), None, real, real)]
    if missing == "openvino":
        calls += [lambda: openvino_runner(tmp_path / "s.xml"), bf16_supported,
                  lambda: time_openvino(tmp_path / "s.xml", real[0]), lambda: openvino_ops(tmp_path / "s.xml")]  # fmt: skip
    for call in calls:
        with pytest.raises(RuntimeMissing) as err:
            call()
        message = str(err.value)
        assert "\n" not in message and message.startswith(f"{missing} is not installed")
        assert message.endswith("pip install 'edgedepth[openvino]'")
    assert not (tmp_path / "ov").exists()


@pytest.mark.slow
def test_from_a_trt10_onnx_file(ov, ckpt, wrapper, calib_images, tmp_path):
    """The real TensorRT 10 base: uint8, dynamic batch, opset 20 (dynamo exporter)."""
    export_onnx(ckpt, tmp_path, variants=("L",), size=SIZE, target="trt10", with_seg=True, progress=False)
    base = tmp_path / "student_L_trt10_fp32.onnx"
    entries = export_openvino(
        base, tmp_path / "ov", "student_L_trt10", ("fp32", "fp16", "int8"), wrapper,
        _inputs(_images(), "uint8"), _inputs(calib_images, "uint8"), progress=False,
    )  # fmt: skip
    assert [e["precision"] for e in entries] == ["fp32", "fp16", "int8"]
    assert all(e["input"]["shape"] == [1, 3, *SIZE] and e["input"]["dtype"] == "uint8" for e in entries)
    assert entries[0]["parity"]["max_rel_err"] < 1e-4
