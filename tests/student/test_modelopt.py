"""The INT8 TensorRT file: the structural check (on hand-made Q/DQ graphs and on our own placement),
and ModelOpt's quantization (skipped where ``modelopt.onnx.quantization`` does not import)."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization.calibrate import CalibraterBase
from skimage import data

from edgedepth.student.deploy import onnx_checks
from edgedepth.student.deploy.calibration import to_export_input
from edgedepth.student.deploy.export import _to_int8, export_onnx
from edgedepth.student.deploy.modelopt_quant import modelopt_int8
from edgedepth.student.deploy.runtimes import RuntimeMissing
from tests.student.test_export import _checkpoint

SIZE = (64, 96)
NAME = "student_L_trt8_int8.onnx"

# ---------------------------------------------------------------------------------------------
# hand-made graphs: image -> Cast -> Sub -> Mul -> Conv 3->16 -> Clip -> Conv 16->4 -> DepthToSpace


def _qdq(nodes, inits, tensor, tag, scale, axis=None, zero=0, ztype=TensorProto.INT8):
    """Q -> DQ on ``tensor`` (``scale`` a float or one per channel); returns the DQ output."""
    scale = np.atleast_1d(np.asarray(scale, np.float32)) if axis is not None else np.float32(scale)
    zeros = np.full(np.shape(scale), zero, helper.tensor_dtype_to_np_dtype(ztype))
    inits += [numpy_helper.from_array(scale, f"{tag}_s"), numpy_helper.from_array(zeros, f"{tag}_z")]
    extra = {"axis": axis} if axis is not None else {}
    nodes.append(helper.make_node("QuantizeLinear", [tensor, f"{tag}_s", f"{tag}_z"], [f"{tag}_q"], f"q_{tag}", **extra))  # fmt: skip
    nodes.append(helper.make_node("DequantizeLinear", [f"{tag}_q", f"{tag}_s", f"{tag}_z"], [f"{tag}_dq"], f"dq_{tag}", **extra))  # fmt: skip
    return f"{tag}_dq"


def tiny(target="trt8", weight_dq=True, input_dq=True, zero=0, ztype=TensorProto.INT8, extra_op=None, mid=16):
    """A two-Conv Q/DQ graph in the exported file's form, for ``target`` (``mid`` channels between
    the Convs); the keywords break it."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    w1 = rng.normal(0, 0.1, (mid, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.1, (4, mid, 1, 1)).astype(np.float32)
    consts = {"w1": w1, "w2": w2, "b1": np.zeros(mid, np.float32), "b2": np.zeros(4, np.float32),
              "offset": np.full((1, 3, 1, 1), 120, np.float32), "scale": np.full((1, 3, 1, 1), 0.02, np.float32),
              "lo": np.float32(0), "hi": np.float32(6)}  # fmt: skip
    inits += [numpy_helper.from_array(v, k) for k, v in consts.items()]
    nodes += [
        helper.make_node("Cast", ["image"], ["x0"], "cast", to=TensorProto.FLOAT),
        helper.make_node("Sub", ["x0", "offset"], ["x1"], "sub"),
        helper.make_node("Mul", ["x1", "scale"], ["x2"], "mul"),
    ]
    a1 = _qdq(nodes, inits, "x2", "act1", 0.02)
    q1 = _qdq(nodes, inits, "w1", "w1", np.abs(w1).max((1, 2, 3)) / 127, axis=0)
    nodes.append(helper.make_node("Conv", [a1, q1, "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"], "clip1"))
    a2 = _qdq(nodes, inits, "r1", "act2", 6 / 127, zero=zero, ztype=ztype) if input_dq else "r1"
    q2 = _qdq(nodes, inits, "w2", "w2", np.abs(w2).max((1, 2, 3)) / 127, axis=0) if weight_dq else "w2"
    nodes.append(helper.make_node("Conv", [a2, q2, "b2"], ["c2"], "conv2"))
    last = "c2"
    if extra_op:
        nodes.append(helper.make_node(extra_op, ["c2"], ["c3"], "extra_node"))
        last = "c3"
    nodes.append(helper.make_node("DepthToSpace", [last], ["depth"], "shuffle", blocksize=2, mode="CRD"))
    batch = 1 if target == "trt8" else "batch"
    dtype = TensorProto.FLOAT if target == "trt8" else TensorProto.UINT8
    graph = helper.make_graph(
        nodes, "student", [helper.make_tensor_value_info("image", dtype, [batch, 3, 64, 96])],
        [helper.make_tensor_value_info("depth", TensorProto.FLOAT, [batch, 1, 128, 192])], inits,
    )  # fmt: skip
    opset = onnx_checks.TARGET_OPSET[target]
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=onnx_checks.MAX_IR_VERSION[target]
    )


@pytest.mark.parametrize("target", ["trt8", "trt10"])
def test_a_good_file_passes_with_its_counts(target):
    info = onnx_checks.check_trt_int8_structure(tiny(target), target, NAME)
    assert info["opset"] == onnx_checks.TARGET_OPSET[target]
    assert (info["convs"], info["quantized_convs"], info["float_convs"]) == (2, 2, 0)
    assert (info["qdq_nodes"], info["quantize_linear"], info["dequantize_linear"]) == (8, 4, 4)
    assert info["quantized_ops"] == ["Conv"]


@pytest.mark.parametrize(
    "broken, words",
    [
        (dict(weight_dq=False), "Conv conv2 has no DequantizeLinear on its weight"),
        (dict(input_dq=False), "Conv conv2 has no DequantizeLinear on its input"),
        (dict(zero=3), "QuantizeLinear q_act2 has a int8 zero point [3]; TensorRT needs int8"),
        (dict(zero=128, ztype=TensorProto.UINT8), "QuantizeLinear q_act2 has a uint8 zero point [128]"),
        (dict(extra_op="Softmax"), "not on the trt8 allow-list: Softmax (first: Softmax extra_node)"),
    ],
    ids=["weight-without-dq", "input-without-dq", "nonzero-zero-point", "uint8-qdq", "foreign-operator"],
)
def test_a_broken_file_fails_in_one_line_naming_the_node(broken, words):
    with pytest.raises(ValueError) as error:
        onnx_checks.check_trt_int8_structure(tiny(**broken), "trt8", NAME)
    message = str(error.value)
    assert message.startswith(f"{NAME}: ") and words in message and "\n" not in message


def test_per_channel_activations_a_float_file_and_the_opset_are_refused():
    model = tiny()
    scale = next(t for t in model.graph.initializer if t.name == "act2_s")
    scale.CopyFrom(numpy_helper.from_array(np.full(16, 0.05, np.float32), "act2_s"))
    with pytest.raises(ValueError, match="QuantizeLinear q_act2 quantizes an activation per channel"):
        onnx_checks.check_trt_int8_structure(model, "trt8", NAME)
    with pytest.raises(ValueError, match="Conv conv2 has no DequantizeLinear on its weight"):
        onnx_checks.check_trt_int8_structure(tiny(weight_dq=False, input_dq=False), "trt8", NAME)
    with pytest.raises(ValueError, match="opset 13, target trt10 needs 20"):
        onnx_checks.check_trt_int8_structure(tiny("trt8"), "trt10", NAME)


def test_a_conv_too_narrow_for_int8_may_stay_float_whole():
    info = onnx_checks.check_trt_int8_structure(tiny(mid=12, weight_dq=False, input_dq=False), "trt8", NAME)
    assert (info["convs"], info["quantized_convs"], info["float_convs"]) == (2, 1, 1)
    with pytest.raises(ValueError, match="Conv conv2 has no DequantizeLinear on its weight"):
        onnx_checks.check_trt_int8_structure(tiny(mid=12, weight_dq=False), "trt8", NAME)  # half-quantized


# ---------------------------------------------------------------------------------------------
# a small real student


def _frames(dtype):
    return [to_export_input(im, SIZE, dtype) for im in (data.astronaut(), data.chelsea(), data.coffee())]


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    """The FP32 files of variant L at 64x96, made on first use per target."""
    root = tmp_path_factory.mktemp("modelopt")
    ckpt, made = _checkpoint(root / "student.pt", seg=False), {}

    def get(target):
        if target not in made:
            export_onnx(ckpt, root / target, ("L",), SIZE, target, ("fp32",), progress=False)
            made[target] = onnx.load(str(root / target / f"student_L_{target}_fp32.onnx"))
        return made[target]

    return get


def test_our_placement_passes_the_check_and_its_ort_form_fails(fp32):
    model = fp32("trt8")
    frames = _frames("float32")
    info = onnx_checks.check_trt_int8_structure(_to_int8(model, frames, "tensorrt"), "trt8", NAME)
    assert info["quantized_convs"] == info["convs"] > 0 and info["float_convs"] == 0
    with pytest.raises(ValueError, match="TensorRT needs int8 with zero point 0"):
        onnx_checks.check_trt_int8_structure(_to_int8(model, frames, "onnxruntime"), "trt8", NAME)


def test_without_modelopt_the_pip_line_and_empty_frames_refused_first(monkeypatch):
    for module in ("modelopt", "modelopt.onnx", "modelopt.onnx.quantization"):
        monkeypatch.setitem(sys.modules, module, None)
    frame = np.zeros((1, 3, 64, 96), np.float32)
    with pytest.raises(RuntimeMissing, match=r"pip install 'edgedepth\[tensorrt\]'"):
        modelopt_int8(tiny(), [frame], "trt8")
    with pytest.raises(ValueError, match=f"^{NAME}: no calibration frames") as error:
        modelopt_int8(tiny(), [], "trt8", name=NAME)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="calibration frame 0 is uint8"):
        modelopt_int8(tiny(), [frame.astype(np.uint8)], "trt8", name=NAME)


@pytest.mark.parametrize("target", ["trt8", pytest.param("trt10", marks=pytest.mark.slow)])
def test_modelopt_int8_fits_the_target_and_stays_near_fp32(fp32, target, capfd, tmp_path):
    pytest.importorskip("modelopt.onnx.quantization", reason="ModelOpt is the [tensorrt] extra")
    model, dtype = fp32(target), ("float32" if target == "trt8" else "uint8")
    frames = _frames(dtype)
    ort_before = _to_int8(model, frames, "onnxruntime")
    init_before = CalibraterBase.__init__
    capfd.readouterr()
    name = f"student_L_{target}_int8.onnx"
    quantized = modelopt_int8(model, frames, target, name=name)
    assert capfd.readouterr() == ("", "")  # ModelOpt's prints and progress bars are hidden
    info = onnx_checks.check_trt_int8_structure(quantized, target, name)
    assert info["opset"] == onnx_checks.TARGET_OPSET[target]
    assert info["ir_version"] <= onnx_checks.MAX_IR_VERSION[target]
    assert {"Add", "Conv"} <= set(info["quantized_ops"]) and info["quantized_convs"] > info["float_convs"]
    for op in ("Cast", "Sub", "Mul", "DepthToSpace", "Exp"):  # the graph around the Q/DQ is kept
        assert sum(n.op_type == op for n in quantized.graph.node) == sum(
            n.op_type == op for n in model.graph.node
        )
    assert [i.name for i in quantized.graph.input] == ["image"] and quantized.graph.input[
        0
    ] == model.graph.input[0]
    assert not any(t.data_location == TensorProto.EXTERNAL for t in quantized.graph.initializer)

    sessions = []
    for key, m in (("fp32", model), ("int8", quantized)):
        onnx.save(m, str(tmp_path / f"{key}.onnx"))
        sessions.append(onnx_checks.session(tmp_path / f"{key}.onnx"))
    real = [to_export_input(data.rocket(), SIZE, dtype), to_export_input(data.coffee(), SIZE, dtype)]
    ref = [onnx_checks.run(sessions[0], x)[0] for x in real]
    got = np.concatenate([onnx_checks.run(sessions[1], x)[0].ravel() for x in real])
    figures = onnx_checks.depth_figures(got, np.concatenate([r.ravel() for r in ref]))
    assert figures["abs_rel"] <= onnx_checks.INT8_ABS_REL_MAX and figures["rmse"] <= onnx_checks.INT8_RMSE_MAX

    # ModelOpt patches ONNX Runtime's quantizer; the ORT-form copy made after it is unchanged
    assert CalibraterBase.__init__ is init_before
    assert _to_int8(model, frames, "onnxruntime").SerializeToString() == ort_before.SerializeToString()


def test_modelopt_int8_refuses_a_bad_target_or_method():
    frame = np.zeros((1, 3, 64, 96), np.float32)
    with pytest.raises(ValueError, match="unknown target 'trt9'"):
        modelopt_int8(tiny(), [frame], "trt9", name=NAME)
    with pytest.raises(ValueError, match="calibration must be max or entropy"):
        modelopt_int8(tiny(), [frame], "trt8", name=NAME, calibration="percentile")
