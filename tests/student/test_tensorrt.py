"""TensorRT engine builds: version dispatch, plans, Q/DQ detection, calibration batches, and build_engine
against a stubbed `tensorrt` of each generation (8.x / 10.x / 11.x, API names as the real bindings name
them); the real build runs only where tensorrt imports and a CUDA GPU exists."""

from __future__ import annotations

import enum
import importlib.util
import sys
import types

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from edgedepth.student.deploy.calibration import calibration_frames, to_export_input
from edgedepth.student.deploy.device_commands import trtexec_command
from edgedepth.student.deploy.onnx_inspect import onnx_has_fp16, onnx_has_qdq, onnx_inputs
from edgedepth.student.deploy.tensorrt import (
    EngineBuildError,
    TensorRTUnavailable,
    build_engine,
    calibration_batches,
    make_calibrator,
)
from edgedepth.student.deploy.tensorrt_plan import plan_build, tensorrt_generation
from tests.student.labelfolder import make_label_folder

# ---------------------------------------------------------------------------------------------
# tiny ONNX files


def write_onnx(path, qdq=False, fp16=False, batch="batch", dtype=TensorProto.FLOAT):
    shape = [batch, 3, 64, 128]
    nodes, inits = [], []
    if qdq:
        inits = [
            helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]),
            helper.make_tensor("z", TensorProto.INT8, [], [0]),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["image", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
            helper.make_node("Relu", ["dq"], ["depth"]),
        ]
    elif fp16:
        nodes += [
            helper.make_node("Cast", ["image"], ["h"], to=TensorProto.FLOAT16),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("Cast", ["r"], ["depth"], to=TensorProto.FLOAT),
        ]
    else:
        nodes.append(helper.make_node("Relu", ["image"], ["depth"]))
    graph = helper.make_graph(
        nodes,
        "student",
        [helper.make_tensor_value_info("image", dtype, shape)],
        [helper.make_tensor_value_info("depth", TensorProto.FLOAT, shape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


# ---------------------------------------------------------------------------------------------
# versions and plans


def test_generation_parsing():
    assert [tensorrt_generation(v) for v in ("8.2.1.8", "8.6.1", "9.2.0", "10.3.0", "11.4.0.106")] == [
        8,
        8,
        10,
        10,
        11,
    ]
    for bad in ("7.1.3", "12.0", "tensorrt", ""):
        with pytest.raises(ValueError) as error:
            tensorrt_generation(bad)
        assert "\n" not in str(error.value)


def test_trt8_plans_use_builder_flags_and_explicit_batch():
    tx2 = plan_build("8.2.1", fp16=True, int8=False, onnx_is_qdq=False, has_calibrator=False)
    assert tx2.builder_flags == ("FP16",) and tx2.network_flags == ("EXPLICIT_BATCH",)
    assert tx2.workspace_api == "max_workspace_size" and tx2.precision == "fp16" and not tx2.strongly_typed
    assert "TensorRT 8.2.1" in tx2.description and "FP16" in tx2.description
    newer = plan_build("8.6.1", fp16=True, int8=True, onnx_is_qdq=False, has_calibrator=True)
    assert newer.builder_flags == ("FP16", "INT8") and newer.int8_source == "calibrator"
    assert newer.workspace_api == "set_memory_pool_limit" and newer.precision == "int8+fp16"
    fp32 = plan_build("8.2.1", fp16=False, int8=False, onnx_is_qdq=False, has_calibrator=False)
    assert fp32.builder_flags == () and fp32.precision == "fp32" and fp32.explicit_batch
    qdq = plan_build("8.2.1", fp16=False, int8=False, onnx_is_qdq=True, has_calibrator=False)
    assert qdq.builder_flags == ("INT8",) and qdq.int8_source == "qdq"


def test_trt10_plans_flags_or_strongly_typed():
    typed = plan_build("10.3.0", fp16=False, int8=False, onnx_is_qdq=False, has_calibrator=False)
    assert typed.network_flags == ("STRONGLY_TYPED",) and typed.builder_flags == ()
    assert "strongly typed" in typed.description and typed.workspace_api == "set_memory_pool_limit"
    weak = plan_build("10.3.0", fp16=True, int8=False, onnx_is_qdq=False, has_calibrator=False)
    assert weak.builder_flags == ("FP16",) and weak.network_flags == () and weak.int8_source is None
    calib = plan_build("10.3.0", fp16=False, int8=True, onnx_is_qdq=False, has_calibrator=True)
    assert calib.builder_flags == ("INT8",) and calib.uses_calibrator and "deprecated" in calib.description
    qdq = plan_build("10.3.0", fp16=True, int8=True, onnx_is_qdq=True, has_calibrator=True)
    assert qdq.int8_source == "qdq" and "not used" in qdq.description
    nine = plan_build("9.2.0", fp16=False, int8=False, onnx_is_qdq=False, has_calibrator=False)
    assert nine.generation == 10 and nine.network_flags == ("EXPLICIT_BATCH", "STRONGLY_TYPED")


def test_trt11_plans_are_strongly_typed():
    fp32 = plan_build("11.4.0", fp16=False, int8=False, onnx_is_qdq=False, has_calibrator=False)
    assert fp32.network_flags == ("STRONGLY_TYPED",) and fp32.builder_flags == ()
    assert fp32.precision == "fp32 (from the ONNX file)"
    fp16 = plan_build(
        "11.4.0", fp16=True, int8=False, onnx_is_qdq=False, has_calibrator=False, onnx_has_fp16=True
    )
    assert fp16.description == (
        "TensorRT 11.4.0: strongly typed network; precision from the ONNX file (FP16 flag not used)"
    )
    qdq = plan_build("11.4.0", fp16=False, int8=True, onnx_is_qdq=True, has_calibrator=False)
    assert qdq.int8_source == "qdq" and qdq.precision.startswith("int8")


@pytest.mark.parametrize(
    "version, fp16, int8, qdq, calib, words",
    [
        ("11.4.0", True, False, False, False, "FP16"),
        ("11.4.0", False, True, False, False, "QuantizeLinear"),
        ("11.4.0", False, True, False, True, "removed"),
        ("11.4.0", False, True, True, True, "removed"),
        ("10.3.0", False, True, False, False, "--calib-labels"),
        ("8.2.1", False, True, False, False, "--calib-labels"),
    ],
)
def test_refusals_are_one_line(version, fp16, int8, qdq, calib, words):
    with pytest.raises(ValueError) as error:
        plan_build(version, fp16=fp16, int8=int8, onnx_is_qdq=qdq, has_calibrator=calib)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_trtexec_command_per_generation():
    assert trtexec_command("m.onnx", "m.engine", True, False, 8, 512) == (
        "trtexec --onnx=m.onnx --saveEngine=m.engine --fp16 --workspace=512"
    )
    assert (
        trtexec_command("m.onnx", "m.engine", False, True, 10)
        == "trtexec --onnx=m.onnx --saveEngine=m.engine --int8"
    )
    assert trtexec_command("m.onnx", "m.engine", False, False, 10, 64).endswith(
        "--stronglyTyped --memPoolSize=workspace:64"
    )
    assert trtexec_command("m.onnx", "m.engine", True, False, 11).endswith("--stronglyTyped")
    assert "--fp16" not in trtexec_command("m.onnx", "m.engine", True, False, 11)


# ---------------------------------------------------------------------------------------------
# ONNX inspection and calibration batches


def test_onnx_inspection(tmp_path):
    plain, qdq, half = (
        write_onnx(tmp_path / "a.onnx"),
        write_onnx(tmp_path / "b.onnx", qdq=True),
        write_onnx(tmp_path / "c.onnx", fp16=True),
    )
    assert not onnx_has_qdq(plain) and onnx_has_qdq(qdq) and not onnx_has_qdq(half)
    assert not onnx_has_fp16(plain) and onnx_has_fp16(half)
    assert onnx_inputs(plain) == {"image": ((None, 3, 64, 128), "float32")}
    assert onnx_inputs(write_onnx(tmp_path / "u.onnx", batch=2, dtype=TensorProto.UINT8)) == {
        "image": ((2, 3, 64, 128), "uint8")
    }
    with pytest.raises(FileNotFoundError):
        onnx_has_qdq(tmp_path / "missing.onnx")


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    return make_label_folder(
        tmp_path_factory.mktemp("labels"), {"2011_09_26_drive_0001_sync": 3}, seg=False, lidar=False
    )


def test_calibration_batches_match_to_export_input(labels):
    frames = calibration_frames(labels, 3, 0)
    batches = calibration_batches(labels, (32, 64), batch_size=1, frames=3, dtype="float32")
    assert len(batches) == 3 and all(b.shape == (1, 3, 32, 64) and b.dtype == np.float32 for b in batches)
    for batch, image in zip(batches, frames.images, strict=True):
        np.testing.assert_array_equal(batch, to_export_input(image, (32, 64), "float32"))
    paired = calibration_batches(labels, (64, 128), batch_size=2, frames=3, dtype="uint8")
    assert [b.shape for b in paired] == [(2, 3, 64, 128)] * 2 and paired[0].dtype == np.uint8
    np.testing.assert_array_equal(paired[1][1], to_export_input(frames.images[0], (64, 128), "uint8")[0])


class FakeCalibratorBase:
    def __init__(self):
        self.base_initialised = True


def test_make_calibrator_subclasses_the_trt_calibrator(tmp_path):
    trt = types.SimpleNamespace(IInt8EntropyCalibrator2=FakeCalibratorBase, __version__="8.2.1")
    batches = [np.zeros((2, 3, 8, 8), np.float32)] * 2
    calibrator = make_calibrator(trt, batches, tmp_path / "cache")
    assert isinstance(calibrator, FakeCalibratorBase) and calibrator.base_initialised
    assert type(calibrator).__name__ == "EntropyCalibrator" and calibrator.get_batch_size() == 2
    assert calibrator.read_calibration_cache() is None
    calibrator.write_calibration_cache(b"scales")
    assert (tmp_path / "cache").read_bytes() == b"scales"
    calibrator.index = 2
    assert calibrator.get_batch(["image"]) is None
    with pytest.raises(ValueError, match="removed in 11"):
        make_calibrator(types.SimpleNamespace(__version__="11.4.0"), batches)
    with pytest.raises(ValueError, match="one batch size"):
        make_calibrator(trt, [np.zeros((1, 3, 8, 8)), np.zeros((2, 3, 8, 8))])


# ---------------------------------------------------------------------------------------------
# build_engine against stubbed tensorrt modules


def test_build_engine_without_tensorrt(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError
    with pytest.raises(FileNotFoundError, match="m.onnx: ONNX file not found"):
        build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", fp16=True)
    (tmp_path / "m.onnx").write_bytes(b"")
    with pytest.raises(TensorRTUnavailable) as error:
        build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", fp16=True)
    message = str(error.value)
    assert "tensorrt is not installed" in message and "\n" not in message
    assert f"trtexec --onnx={tmp_path / 'm.onnx'} --saveEngine={tmp_path / 'm.engine'} --fp16" in message


def fake_tensorrt(version, calls, parse_ok=True, fast_int8=True, shape=(-1, 3, 64, 128), engine=b"PLAN"):
    """A `tensorrt` module with the build API surface of ``version``'s generation, recording calls."""
    major, minor = (int(p) for p in version.split(".")[:2])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version

    class Logger:
        WARNING = "WARNING"

        def __init__(self, severity):
            calls.append(("Logger", severity))

    if major < 10:
        trt.NetworkDefinitionCreationFlag = enum.IntEnum(
            "NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1}
        )
    elif major == 10:
        trt.NetworkDefinitionCreationFlag = enum.IntEnum(
            "NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}
        )
    else:
        trt.NetworkDefinitionCreationFlag = enum.IntEnum(
            "NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 1}
        )
    if major < 11:
        trt.BuilderFlag = enum.IntEnum("BuilderFlag", {"FP16": 0, "INT8": 1, "DEBUG": 2})

        class IInt8EntropyCalibrator2:
            def __init__(self):
                pass

        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    else:
        trt.BuilderFlag = enum.IntEnum("BuilderFlag", {"DEBUG": 2, "REFIT": 3})
    if (major, minor) >= (8, 4):
        trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0})

    class Tensor:
        name = "image"

        def __init__(self):
            self.shape = shape

    class Network:
        num_inputs = 1

        def get_input(self, index):
            return Tensor()

    class Profile:
        def set_shape(self, name, low, opt, high):
            calls.append(("set_shape", name, low, opt, high))

    class Config:
        def __init__(self):
            self.int8_calibrator = None

        def set_flag(self, flag):
            calls.append(("set_flag", flag))

        def add_optimization_profile(self, profile):
            calls.append(("add_optimization_profile",))

        def __setattr__(self, name, value):
            if name == "max_workspace_size" and hasattr(trt, "MemoryPoolType"):
                raise AttributeError("max_workspace_size")  # removed in 10.x
            calls.append(("config." + name, value))
            object.__setattr__(self, name, value)

    if hasattr(trt, "MemoryPoolType"):

        def set_memory_pool_limit(self, pool, size):
            calls.append(("set_memory_pool_limit", pool, size))

        Config.set_memory_pool_limit = set_memory_pool_limit
        Config.set_calibration_profile = lambda self, profile: calls.append(("set_calibration_profile",))

    class Builder:
        def __init__(self, logger):
            calls.append(("Builder",))
            if major < 11:
                self.platform_has_fast_fp16 = True
                self.platform_has_fast_int8 = fast_int8

        def create_network(self, flags):
            calls.append(("create_network", flags))
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls.append(("build_serialized_network", config.int8_calibrator))
            return engine

    class OnnxParser:
        num_errors = 0 if parse_ok else 2

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            calls.append(("parse_from_file", path))
            return parse_ok

        def get_error(self, index):
            return "In node 3 (importConv):\nUNSUPPORTED_NODE: Mod"

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, OnnxParser
    return trt


@pytest.fixture
def gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def run_fake(monkeypatch, tmp_path, version, onnx_file=None, **kwargs):
    calls = []
    options = {k: kwargs.pop(k) for k in ("parse_ok", "fast_int8", "shape", "engine") if k in kwargs}
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(version, calls, **options))
    lines = []
    report = build_engine(
        onnx_file or write_onnx(tmp_path / "m.onnx"),
        tmp_path / "out" / "m.engine",
        log=lines.append,
        **kwargs,
    )
    return report, calls, lines


def names(calls):
    return [c[0] for c in calls]


def test_build_engine_trt82_fp16(tmp_path, monkeypatch, gpu):
    report, calls, lines = run_fake(monkeypatch, tmp_path, "8.2.1", fp16=True, workspace_mb=256)
    assert ("create_network", 1 << 0) in calls  # EXPLICIT_BATCH
    assert ("config.max_workspace_size", 256 << 20) in calls and "set_memory_pool_limit" not in names(calls)
    assert [c[1].name for c in calls if c[0] == "set_flag"] == ["FP16"]
    assert ("set_shape", "image", (1, 3, 64, 128), (1, 3, 64, 128), (8, 3, 64, 128)) in calls
    assert (tmp_path / "out" / "m.engine").read_bytes() == b"PLAN"
    assert report.version == "8.2.1" and report.precision == "fp16"
    assert report.input_shapes == {"image": ((1, 3, 64, 128), (1, 3, 64, 128), (8, 3, 64, 128))}
    assert lines[0] == report.path_description and "explicit-batch" in lines[0]
    assert not list((tmp_path / "out").glob(".*tmp*"))


def test_build_engine_trt8_int8_calibrator_from_shards(tmp_path, monkeypatch, gpu, labels):
    report, calls, lines = run_fake(
        monkeypatch, tmp_path, "8.6.1", int8=True, calib_labels=labels, calib_frames=3
    )
    assert [c[1].name for c in calls if c[0] == "set_flag"] == ["INT8"]
    calibrator = next(c[1] for c in calls if c[0] == "build_serialized_network")
    assert type(calibrator).__name__ == "EntropyCalibrator" and calibrator.get_batch_size() == 1
    assert len(calibrator.batches) == 3 and calibrator.batches[0].shape == (1, 3, 64, 128)
    assert ("set_calibration_profile",) in calls and report.precision == "int8"
    assert any("calibration on 3 batch" in line for line in lines)


def test_build_engine_trt8_refuses_int8_on_a_gpu_without_it(tmp_path, monkeypatch, gpu, labels):
    with pytest.raises(ValueError, match="TX2"):
        run_fake(monkeypatch, tmp_path, "8.2.1", int8=True, calib_labels=labels, fast_int8=False)


def test_build_engine_trt10_weak_and_strong(tmp_path, monkeypatch, gpu):
    _, calls, _ = run_fake(monkeypatch, tmp_path, "10.3.0", fp16=True, shape=(1, 3, 64, 128))
    assert ("create_network", 0) in calls and [c[1].name for c in calls if c[0] == "set_flag"] == ["FP16"]
    pool = next(c for c in calls if c[0] == "set_memory_pool_limit")
    assert pool[1].name == "WORKSPACE" and pool[2] == 1024 << 20
    assert "set_shape" not in names(calls)  # fixed shapes need no profile
    _, calls, lines = run_fake(monkeypatch, tmp_path, "10.3.0")
    assert ("create_network", 1 << 1) in calls and "set_flag" not in names(calls)  # STRONGLY_TYPED
    assert "strongly typed" in lines[0]


def test_build_engine_trt11(tmp_path, monkeypatch, gpu):
    half = write_onnx(tmp_path / "half.onnx", fp16=True)
    report, calls, lines = run_fake(monkeypatch, tmp_path, "11.4.0", onnx_file=half, fp16=True)
    assert ("create_network", 1 << 1) in calls and "set_flag" not in names(calls)
    assert "config.max_workspace_size" not in names(calls) and "set_memory_pool_limit" in names(calls)
    assert lines[0].endswith("(FP16 flag not used)") and report.precision == "fp16 (from the ONNX file)"
    with pytest.raises(ValueError, match="FP32"):
        run_fake(monkeypatch, tmp_path, "11.4.0", fp16=True)


def test_build_engine_reports_parser_errors_and_missing_gpu(tmp_path, monkeypatch, gpu):
    with pytest.raises(EngineBuildError) as error:
        run_fake(monkeypatch, tmp_path, "10.3.0", parse_ok=False)
    assert "2 error(s)" in str(error.value) and "UNSUPPORTED_NODE: Mod" in str(error.value)
    assert "\n" not in str(error.value) and not (tmp_path / "out" / "m.engine").exists()
    with pytest.raises(EngineBuildError, match="could not build"):
        run_fake(monkeypatch, tmp_path, "10.3.0", engine=None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TensorRTUnavailable) as error:
        run_fake(monkeypatch, tmp_path, "10.3.0", fp16=True)
    assert "no CUDA GPU" in str(error.value) and "trtexec --onnx=" in str(error.value)


# ---------------------------------------------------------------------------------------------
# the real thing


def tensorrt_imports() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


@pytest.mark.skipif(not tensorrt_imports(), reason="tensorrt does not import here")
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_real_build(tmp_path):
    import tensorrt as trt

    report = build_engine(write_onnx(tmp_path / "m.onnx"), tmp_path / "m.engine", log=lambda line: None)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine((tmp_path / "m.engine").read_bytes())
    assert engine is not None and report.input_shapes["image"][2] == (8, 3, 64, 128)


def test_build_engine_qdq_file_needs_no_calibrator(tmp_path, monkeypatch, gpu):
    qdq = write_onnx(tmp_path / "qdq.onnx", qdq=True)
    report, calls, lines = run_fake(monkeypatch, tmp_path, "10.3.0", onnx_file=qdq, int8=True)
    assert [c[1].name for c in calls if c[0] == "set_flag"] == ["INT8"]
    assert next(c[1] for c in calls if c[0] == "build_serialized_network") is None  # no calibrator
    assert "Q/DQ" in lines[0] and report.precision == "int8"
    report, calls, _ = run_fake(monkeypatch, tmp_path, "11.4.0", onnx_file=qdq, int8=True)
    assert "set_flag" not in names(calls) and report.precision == "int8 (from the ONNX file)"


def test_trtexec_command_for_an_unknown_version_has_no_workspace_flag():
    assert trtexec_command("m.onnx", "m.engine", True, False, None, 512) == (
        "trtexec --onnx=m.onnx --saveEngine=m.engine --fp16"
    )
