"""LiteRT (.tflite) export of the student: the files, their contract and parity, true int8 kernels,
refusals, removal of a failing file, timing, and the missing-runtime line.

Conversion is the slow part (~15-30 s per file on 2 cores): one module fixture per input dtype.
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch
from skimage import data

from edgedepth.student.deploy import litert_backend, parity
from edgedepth.student.deploy.calibration import to_export_input
from edgedepth.student.deploy.export import ExportModel
from edgedepth.student.deploy.litert_backend import export_litert, litert_runner, tflite_ops, time_litert
from edgedepth.student.deploy.runtimes import RuntimeMissing
from edgedepth.student.model import load_student
from tests.student.test_export import _checkpoint, _images

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")
from ai_edge_litert.interpreter import Interpreter, OpResolverType  # noqa: E402

# the module's fixtures convert once per worker: keep its tests on one pytest-xdist worker
pytestmark = [pytest.mark.xdist_group("litert")] if importlib.util.find_spec("xdist") else []

SIZE = (64, 96)
OUT_SIZE = (32, 48)  # variant L: half resolution
STEM = "student_L_litert"


@pytest.fixture(scope="module")
def wrapper(tmp_path_factory):
    net, cfg = load_student(
        _checkpoint(tmp_path_factory.mktemp("ckpt") / "student.pt"), "L", return_classes=True
    )
    return ExportModel(net, cfg, with_seg=True).eval()


def _inputs(dtype):
    """(real, calib) in the file's layout: two real frames for parity, three others to calibrate."""
    frames = [to_export_input(image, SIZE, dtype) for image in [*_images(), data.rocket(), data.coffee()]]
    return frames[3:], frames[:3]


@pytest.fixture(scope="module")
def uint8_export(wrapper, tmp_path_factory):
    out = tmp_path_factory.mktemp("litert_uint8")
    real, calib = _inputs("uint8")
    entries = export_litert(
        wrapper, out, STEM, ("fp32", "fp16", "int8"), SIZE, "uint8", real, calib, progress=False
    )
    return out, {e["precision"]: e for e in entries}


@pytest.fixture(scope="module")
def float32_export(wrapper, tmp_path_factory):
    out = tmp_path_factory.mktemp("litert_float32")
    real, _ = _inputs("float32")
    entries = export_litert(wrapper, out, STEM, ("fp32",), SIZE, "float32", real, None, progress=False)
    return out, {e["precision"]: e for e in entries}


def _plain(path):
    """An interpreter without the default delegate: its op list is the file's own operators."""
    interpreter = Interpreter(
        model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interpreter.allocate_tensors()
    return interpreter


def _abs_rel(test, ref):
    return float(np.mean(np.abs(test.astype(np.float64) - ref) / ref))


def test_files_and_entries(uint8_export):
    out, entries = uint8_export
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{STEM}_{p}.tflite" for p in ("fp16", "fp32", "int8")
    )
    for precision, entry in entries.items():
        assert entry["path"] == f"{STEM}_{precision}.tflite" and entry["runtime"] == "litert"
        assert entry["litert_torch"] == sys.modules["litert_torch"].__version__
        assert entry["ops"] == tflite_ops(out / entry["path"]) == sorted(entry["ops"])
        assert {"CONV_2D", "DEPTHWISE_CONV_2D", "EXP", "ARG_MAX"} <= set(entry["ops"])
    assert entries["fp32"]["quantizer"].startswith("none")
    assert (
        "static_wi8_ai8" in entries["int8"]["quantizer"]
        and "3 calibration frame" in entries["int8"]["quantizer"]
    )
    assert "CAST" in entries["fp32"]["ops"]  # the uint8 input is cast inside the graph
    assert "QUANTIZE" in entries["int8"]["ops"] and "QUANTIZE" not in entries["fp32"]["ops"]
    sizes = {p: (out / e["path"]).stat().st_size for p, e in entries.items()}
    assert sizes["int8"] < sizes["fp16"] < sizes["fp32"]


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_fp32_contract_and_parity(request, wrapper, dtype):
    out, entries = request.getfixturevalue(f"{dtype}_export")
    assert entries["fp32"]["parity"]["max_rel_err"] < 1e-4 and entries["fp32"]["parity"]["images"] == 3
    path = out / entries["fp32"]["path"]
    interpreter = Interpreter(model_path=str(path))
    (port,) = interpreter.get_input_details()
    assert np.dtype(port["dtype"]) == np.dtype(dtype) and tuple(port["shape"]) == (1, 3, *SIZE)
    assert interpreter.get_signature_list()["serving_default"] == {
        "inputs": ["image"],
        "outputs": ["classes", "depth"],
    }

    # a fresh real image, computed independently of the backend's runner: the signature runner
    image = to_export_input(data.immunohistochemistry(), SIZE, dtype)
    got = interpreter.get_signature_runner()(image=image)
    with torch.no_grad():
        want_depth, want_classes = (t.numpy() for t in wrapper(torch.from_numpy(image)))
    assert got["depth"].shape == (1, 1, *OUT_SIZE) and got["depth"].dtype == np.float32
    assert got["classes"].shape == (1, *OUT_SIZE) and got["classes"].dtype == np.int32
    assert float(want_depth.std()) > 0  # not trivially passing on a constant map
    assert np.abs(got["depth"] - want_depth).max() / np.abs(want_depth).max() < 1e-4
    assert np.mean(got["classes"] == want_classes) > 0.99
    depth, classes = litert_runner(path, threads=1)(image)  # the runner orders them depth, classes
    np.testing.assert_array_equal(depth, got["depth"])
    np.testing.assert_array_equal(classes, got["classes"])


def test_int8_is_integer_and_within_bound(uint8_export):
    out, entries = uint8_export
    figures = entries["int8"]["parity"]
    assert figures["abs_rel"] <= parity.INT8_ABS_REL_MAX and figures["rmse"] <= parity.INT8_RMSE_MAX
    assert figures["images"] == 2

    # independently: depth of the int8 file vs the fp32 file on an image neither check saw
    image = to_export_input(data.immunohistochemistry(), SIZE, "uint8")
    fp32 = Interpreter(model_path=str(out / entries["fp32"]["path"])).get_signature_runner()(image=image)
    int8_interpreter = Interpreter(model_path=str(out / entries["int8"]["path"]))
    int8 = int8_interpreter.get_signature_runner()(image=image)
    assert int8["depth"].dtype == np.float32 and int8["classes"].dtype == np.int32  # the contract kept
    assert np.dtype(int8_interpreter.get_input_details()[0]["dtype"]) == np.uint8
    assert 0 < _abs_rel(int8["depth"], fp32["depth"]) <= parity.INT8_ABS_REL_MAX

    # true int8 kernels: convolutions with int8 input, weights and output, and int32 biases
    interpreter = _plain(out / entries["int8"]["path"])
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    convs = [op for op in interpreter._get_ops_details() if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    dtypes = [[np.dtype(tensors[i]["dtype"]) for i in (*op["inputs"], *op["outputs"])] for op in convs]
    assert len(convs) > 50
    assert all(d == [np.int8, np.int8, np.int32, np.int8] for d in dtypes)
    weights = tensors[convs[0]["inputs"][1]]
    assert len(weights["quantization_parameters"]["scales"]) == weights["shape"][0] > 1  # per channel


def test_fp16_weights(uint8_export):
    out, entries = uint8_export
    figures = entries["fp16"]["parity"]
    assert figures["abs_rel"] <= parity.FP16_ABS_REL_MAX and figures["rmse"] <= parity.FP16_RMSE_MAX
    interpreter = _plain(out / entries["fp16"]["path"])
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    dequantized = [
        np.dtype(tensors[op["inputs"][0]]["dtype"])
        for op in interpreter._get_ops_details()
        if op["op_name"] == "DEQUANTIZE"
    ]
    assert len(dequantized) > 50 and set(dequantized) == {np.dtype(np.float16)}


def test_failing_parity_removes_the_file(uint8_export, wrapper, tmp_path, monkeypatch):
    """The checks, not the converter, are under test: the converter hands back the fixture's bytes."""
    source, entries = uint8_export
    content = (source / entries["fp32"]["path"]).read_bytes()
    monkeypatch.setattr(litert_backend, "_convert", lambda *args: content)
    real, calib = _inputs("uint8")

    monkeypatch.setattr(parity, "FP32_MAX_REL_ERR", 0.0)
    with pytest.raises(ValueError, match=rf"^{STEM}_fp32.tflite: FP32 max relative error .* vs PyTorch"):
        export_litert(wrapper, tmp_path, STEM, ("fp32", "int8"), SIZE, "uint8", real, calib, progress=False)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()

    monkeypatch.setattr(litert_backend, "_convert", lambda *args: content)
    monkeypatch.setitem(parity.BOUNDS, "int8", (0.0, 0.0))
    with pytest.raises(ValueError, match=rf"^{STEM}_int8.tflite: int8 abs_rel .* vs FP32 exceeds 0"):
        export_litert(wrapper, tmp_path, STEM, ("fp32", "int8"), SIZE, "uint8", real, calib, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == [f"{STEM}_fp32.tflite"]  # the good base stays


@pytest.mark.filterwarnings("ignore:Warning. Enabling `experimental_preserve_all_tensors`")
def test_a_copy_with_int8_outputs_is_refused(uint8_export, wrapper, tmp_path, monkeypatch):
    """ai-edge-quantizer's plain recipe makes the depth output int8: not the contract, so removed."""
    from ai_edge_quantizer import quantizer, recipe

    source, entries = uint8_export
    content = (source / entries["fp32"]["path"]).read_bytes()
    real, calib = _inputs("uint8")
    plain = quantizer.Quantizer(content)
    plain.load_quantization_recipe(recipe.static_wi8_ai8())
    stats = plain.calibrate({"serving_default": [{"image": x} for x in calib]})
    int8_out = plain.quantize(stats, enable_progress_report=False).quantized_model
    monkeypatch.setattr(litert_backend, "_convert", lambda *args: content)
    monkeypatch.setattr(litert_backend, "_quantize", lambda *args: int8_out)
    with pytest.raises(ValueError, match=rf"^{STEM}_int8.tflite: outputs are \[\('int8', 4\)"):
        export_litert(wrapper, tmp_path, STEM, ("int8",), SIZE, "uint8", real, calib, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == [f"{STEM}_fp32.tflite"]


@pytest.mark.parametrize("calib", [None, []])
def test_int8_without_calibration_is_refused_before_any_work(wrapper, tmp_path, monkeypatch, calib):
    monkeypatch.setattr(litert_backend, "_convert", lambda *args: pytest.fail("converted before refusing"))
    out = tmp_path / "out"
    real, _ = _inputs("uint8")
    with pytest.raises(ValueError, match=rf"^{STEM}_int8.tflite: int8 needs calibration inputs") as info:
        export_litert(wrapper, out, STEM, ("fp32", "int8"), SIZE, "uint8", real, calib, progress=False)
    assert "\n" not in str(info.value) and not out.exists()


def test_refusals(wrapper, tmp_path, monkeypatch, uint8_export):
    monkeypatch.setattr(litert_backend, "_convert", lambda *args: pytest.fail("converted before refusing"))
    real, calib = _inputs("uint8")
    with pytest.raises(ValueError, match="unknown LiteRT precision bf16"):
        export_litert(wrapper, tmp_path, STEM, ("bf16",), SIZE, "uint8", real, calib)
    with pytest.raises(
        ValueError, match=r"^student_L_litert: real input 0 is float32 \(1, 3, 64, 96\), not uint8"
    ):
        export_litert(
            wrapper, tmp_path, STEM, ("fp32",), SIZE, "uint8", [r.astype("float32") for r in real], None
        )
    with pytest.raises(ValueError, match="not a multiple of 32"):
        export_litert(wrapper, tmp_path, STEM, ("fp32",), (60, 96), "uint8", real, None)
    out, entries = uint8_export
    run = litert_runner(out / entries["fp32"]["path"])
    with pytest.raises(ValueError, match=r"takes uint8 \(1, 3, 64, 96\), got float32"):
        run(real[0].astype(np.float32))
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(ValueError, match="junk.tflite"):
        tflite_ops(junk)
    with pytest.raises(ValueError, match="junk.tflite: LiteRT cannot load it"):
        litert_runner(junk)


def test_time_litert(uint8_export):
    out, entries = uint8_export
    image = to_export_input(data.astronaut(), SIZE, "uint8")
    for precision in ("fp32", "int8"):
        stats = time_litert(out / entries[precision]["path"], image, threads=1, repeats=5, warmup=1)
        assert stats["fps"] > 0 and stats["latency_ms"] > 0 and stats["p10_ms"] <= stats["p90_ms"]
        assert stats["fps"] == pytest.approx(1000.0 / stats["latency_ms"])
    with pytest.raises(ValueError, match="takes uint8"):
        time_litert(out / entries["fp32"]["path"], image.astype(np.float32), repeats=1, warmup=0)


@pytest.mark.parametrize("module", ["ai_edge_litert", "litert_torch"])
def test_missing_runtime(uint8_export, wrapper, tmp_path, monkeypatch, module):
    out, entries = uint8_export
    real, _ = _inputs("uint8")
    monkeypatch.setitem(sys.modules, module, None)  # import of it fails from now on
    with pytest.raises(RuntimeMissing, match=r"pip install 'edgedepth\[litert\]'") as info:
        export_litert(wrapper, tmp_path / "out", STEM, ("fp32",), SIZE, "uint8", real, None, progress=False)
    assert "\n" not in str(info.value) and not (tmp_path / "out").exists()
    if module == "ai_edge_litert":
        with pytest.raises(RuntimeMissing, match=r"pip install 'edgedepth\[litert\]'"):
            litert_runner(out / entries["fp32"]["path"])
