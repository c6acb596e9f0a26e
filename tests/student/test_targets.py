"""One export of every target (`student export --target trt10,trt8,openvino,litert`) and its bench.

A contract over the registry ``EXPORT_TARGETS``: each target's files are written, described in the
one manifest, and run by their own runtime to the PyTorch model's depth; a missing runtime, an empty
or foreign calibration folder are refused before any work.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgedepth import cli
from edgedepth.student.deploy.calibration import to_export_input
from edgedepth.student.deploy.export import ExportModel
from edgedepth.student.deploy.runtimes import RuntimeMissing
from edgedepth.student.deploy.speed import bench_variants
from edgedepth.student.deploy.targets import EXPORT_TARGETS, export_student
from edgedepth.student.model import load_student
from tests.student.labelfolder import make_label_folder
from tests.student.test_export import _checkpoint, _images

for _module in ("openvino", "ai_edge_litert"):  # looked up, not imported (see the telemetry test)
    if importlib.util.find_spec(_module) is None:
        pytest.skip(f"{_module} is not installed", allow_module_level=True)

SIZE = (64, 96)
RUN = {  # how each target's file is run here: (runner factory, file suffix)
    "trt8": "onnxruntime",
    "trt10": "onnxruntime",
    "openvino": "openvino",
    "litert": "litert",
}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("ckpt") / "student.pt", seg=False)


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    return make_label_folder(tmp_path_factory.mktemp("labels"), {"2011_09_26_drive_0001_sync": 2}, lidar=False,
                             seg=False)  # fmt: skip


@pytest.fixture(scope="module")
def exported(ckpt, labels, tmp_path_factory):
    out = tmp_path_factory.mktemp("all")
    manifest = export_student(ckpt, out, EXPORT_TARGETS, ("XS",), SIZE, ("fp32", "int8"), calib_labels=labels,
                              calib_frames=2, progress=False)  # fmt: skip
    return out, manifest


def _runner(target: str, path):
    if RUN[target] == "onnxruntime":
        from edgedepth.student.deploy.timing import ort_session

        sess = ort_session(path, 1)
        return lambda x: sess.run(None, {"image": x})
    if RUN[target] == "openvino":
        from edgedepth.student.deploy.openvino_backend import openvino_runner

        return openvino_runner(path, "f32", 1)
    from edgedepth.student.deploy.litert_backend import litert_runner

    return litert_runner(path, 1)


@pytest.mark.slow
@pytest.mark.parametrize("target", EXPORT_TARGETS)
def test_every_target_runs_to_the_pytorch_depth(exported, ckpt, target):
    out, manifest = exported
    on_disk = json.loads((out / "manifest.json").read_text())
    entries = [e for e in on_disk["files"] if e["target"] == target]
    assert {e["precision"] for e in entries} == {"fp32", "int8"}, entries
    model, config = load_student(ckpt, "XS")
    wrapper = ExportModel(model, config).eval()
    for entry in entries:
        path = out / entry["path"]
        assert path.is_file() and (out / entry["commands"]).is_file()
        assert entry["variant"] == "XS" and entry["checkpoint_sha256"] == manifest.checkpoint_sha256
        dtype = entry["input"]["dtype"]
        image = to_export_input(_images()[1], SIZE, dtype)
        got = np.asarray(_runner(target, path)(image)[0])
        with torch.no_grad():
            want = wrapper(torch.from_numpy(image))[0].numpy()
        assert got.shape == want.shape == (1, 1, *config.with_size(SIZE).output_size)
        rel = np.abs(got - want).max() / np.abs(want).max()
        bound = 1e-4 if entry["precision"] == "fp32" else 0.1  # int8: within 10 % at the worst pixel
        assert rel < bound, (entry["path"], rel)
        if entry["precision"] == "int8":
            assert entry["quantizer"] and entry["calibration"]["frame_ids"]


def test_a_missing_runtime_is_refused_before_any_work(ckpt, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(RuntimeMissing, match=r"pip install 'edgedepth\[openvino\]'"):
        export_student(ckpt, tmp_path / "out", ("trt8", "openvino"), ("XS",), SIZE, progress=False)
    assert not (tmp_path / "out").exists()
    result = CliRunner().invoke(cli.main, ["student", "export", str(ckpt), "--out", str(tmp_path / "o2"), "--target",
                                           "openvino", "--variants", "XS", "--size", "96x64"])  # fmt: skip
    assert result.exit_code != 0 and "pip install 'edgedepth[openvino]'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o2").exists()


def test_a_missing_runtime_is_a_not_installed_row_with_its_pip_line(ckpt, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    result = bench_variants(ckpt, ["XS"], SIZE, ("onnxruntime", "openvino"), ("fp32",), repeats=2, warmup=1,
                            memory=False, target="trt8")  # fmt: skip
    row = result.row("XS", "openvino", "fp32")
    assert row.status == "not installed" and "pip install 'edgedepth[openvino]'" in row.note
    assert result.row("XS", "onnxruntime", "fp32").status == "ok"


@pytest.mark.parametrize("target", ["openvino", "litert", "trt8"])
def test_an_empty_or_foreign_calibration_folder_is_refused_first(ckpt, tmp_path, target):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "a.png").write_bytes(b"not a label folder")
    for folder in (foreign, tmp_path / "missing"):
        with pytest.raises((ValueError, FileNotFoundError)) as err:
            export_student(ckpt, tmp_path / "out", (target,), ("XS",), SIZE, ("fp32", "int8"), calib_labels=folder,
                           progress=False)  # fmt: skip
        assert str(folder) in str(err.value) and "\n" not in str(err.value)
        assert not (tmp_path / "out").exists()


def test_unknown_target_is_one_line(ckpt, tmp_path):
    result = CliRunner().invoke(cli.main, ["student", "export", str(ckpt), "--out", str(tmp_path / "o"), "--target",
                                           "coreml"])  # fmt: skip
    assert result.exit_code != 0 and "coreml" in result.output and "openvino" in result.output


@pytest.mark.slow
def test_bench_times_and_scores_every_runtime(exported, tmp_path):
    """OpenVINO (with bf16 where the CPU has it) and LiteRT rows from one export folder."""
    from tests.rig_tree import make_rig_tree

    out, _ = exported
    rig = make_rig_tree(tmp_path / "rig", {"seq": 2})
    result = bench_variants(out, ["XS"], SIZE, ("onnxruntime", "openvino", "litert"), ("fp32", "int8", "bf16"),
                            repeats=2, warmup=1, memory=True, eval_root=rig)  # fmt: skip
    for backend in ("onnxruntime", "openvino", "litert"):
        for precision in ("fp32", "int8"):
            row = result.row("XS", backend, precision)
            assert row.status == "ok" and row.fps > 0 and row.peak_memory_mb > 0, row
            assert row.abs_rel is not None and row.eval_frames == 2 and row.file, row
        assert result.row("XS", backend, "fp32").abs_rel == pytest.approx(
            result.row("XS", "onnxruntime", "fp32").abs_rel, rel=1e-3
        )
    assert result.row("XS", "litert", "bf16").status == "skipped"


def test_openvino_sends_no_usage_telemetry(ckpt, tmp_path):
    """OpenVINO's conversion and NNCF send usage events unless the user opted out; edgedepth's
    OpenVINO path runs with their telemetry replaced by the no-op they ship (in a fresh process,
    where edgedepth imports OpenVINO first, as in the CLI)."""
    code = (
        "import sys\n"
        "from edgedepth.student.deploy.runtimes import require\n"
        "require('openvino'); require('nncf')\n"
        "from openvino.tools.ovc import convert_impl\n"
        "from nncf.telemetry import wrapper\n"
        "assert sys.modules['openvino_telemetry'] is None\n"
        "assert convert_impl.tm.__name__.endswith('telemetry_stub'), convert_impl.tm\n"
        "assert type(wrapper.telemetry).__name__ == 'MagicMock', wrapper.telemetry\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("CI", "NNCF_CI")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


class _Determinant(torch.nn.Module):
    """A graph LiteRT has no lowering for (a determinant), shaped like the student's output."""

    def forward(self, image):
        x = image.float()
        scale = torch.linalg.det(x[:, 0, :3, :3]).reshape(1, 1, 1, 1).abs() + 1.0
        return (torch.nn.functional.avg_pool2d(x[:, :1], 2) * scale,)


def test_an_operator_a_target_cannot_express_is_one_line_naming_it(tmp_path):
    from edgedepth.student.deploy.litert_backend import export_litert

    real = [np.zeros((1, 3, *SIZE), np.uint8)]
    with pytest.raises(
        ValueError, match=r"^odd_fp32\.tflite: litert-torch cannot convert the model: .*linalg_det"
    ) as err:
        export_litert(
            _Determinant().eval(), tmp_path, "odd", ("fp32",), SIZE, "uint8", real, None, progress=False
        )
    assert "\n" not in str(err.value) and not list(tmp_path.iterdir())
