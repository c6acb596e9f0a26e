"""Keras ImageNet MobileNetV2 weights in the student: parity with Keras itself, in PyTorch and ONNX.

Keras (torch backend) builds ``MobileNetV2(alpha=0.35, include_top=False)`` with random weights and
random batch-norm statistics (variances down to 1e-3, so Keras's epsilon matters); its weights are
written as the published file is laid out (Keras 2's names and the first MobileNetV2's layer names,
``mobl3_conv_3_expand``), as Keras 2 would write them today, as Keras 3's legacy writer does, and as
a Keras 3 ``.weights.h5`` (with and without layer names); each is imported and the encoder's maps
at strides 4, 8, 16 and 32 must equal Keras's own on the same image, also after ONNX export.
"""

from __future__ import annotations

import os
import re
import warnings

import h5py
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torchvision.models import mobilenet_v2

os.environ["KERAS_BACKEND"] = "torch"  # before Keras is imported; CI installs it (the dev extra)
keras = pytest.importorskip("keras")
from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group  # noqa: E402

from edgedepth.student.deploy import onnx_checks  # noqa: E402
from edgedepth.student.model.build import build_student  # noqa: E402
from edgedepth.student.model.config import ModelConfig  # noqa: E402
from edgedepth.student.model.encoder_weights import load_encoder_weights  # noqa: E402
from edgedepth.student.model.keras_weights import (  # noqa: E402
    is_keras_weights_file,
    keras_shapes,
    keras_to_torchvision,
    load_keras_encoder,
    read_keras_mobilenet_v2,
)
from edgedepth.student.model.network import KERAS_BN_EPS  # noqa: E402

pytestmark = pytest.mark.filterwarnings(  # Keras's torch backend, on every variable read
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
SIZE = (96, 128)  # (height, width), multiples of 32
TAPS = ("block_2_add", "block_5_add", "block_12_add", "block_16_project_BN")
"""Keras's layers at torchvision features[3], [6], [13], [17] (strides 4, 8, 16, 32)."""
TOL = 1e-4


def _random_keras_model(alpha: float = 0.35, seed: int = 0):
    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNetV2(
        alpha=alpha, include_top=False, weights=None, input_shape=(*SIZE, 3)
    )
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            var = 10 ** rng.uniform(-3, 0.5, n)  # small variances: epsilon 1e-3 vs 1e-5 shows
            gamma = rng.uniform(0.5, 1.5, n) * np.sqrt(var)  # keeps the maps near unit scale
            layer.set_weights([gamma, rng.normal(0, 0.1, n), rng.normal(0, 0.1, n), var])
    return model


def _write_legacy(model, path) -> None:
    with h5py.File(path, "w") as handle:
        save_weights_to_hdf5_group(handle, model)


def _text(name: bytes | str) -> str:
    return name.decode() if isinstance(name, bytes) else name


def _first_keras_name(layer: str) -> str:
    """The name the published files give a layer: the first Keras MobileNetV2's (``mobl3_conv_3_expand``,
    ``bn3_conv_3_bn_expand``); Keras loads those files by layer order, so the names never changed."""
    found = re.fullmatch(r"(?:block_(\d+)|expanded_conv)_(expand|depthwise|project)(_BN)?", layer)
    if not found:
        return layer  # Conv1, bn_Conv1, Conv_1, Conv_1_bn and the weightless layers
    block, part, bn = found.group(1) or "0", found.group(2), found.group(3)
    return f"bn{block}_conv_{block}_bn_{part}" if bn else f"mobl{block}_conv_{block}_{part}"


def _keras2_layout(source, path, first_names: bool) -> None:
    """Keras 2's legacy file: ``Conv1/kernel:0``, ``.../depthwise_kernel:0``; with ``first_names``
    the published files' layer names."""
    rename = _first_keras_name if first_names else (lambda name: name)
    with h5py.File(source, "r") as src, h5py.File(path, "w") as dst:
        layers = [_text(n) for n in src.attrs["layer_names"]]
        dst.attrs["layer_names"] = np.array([rename(n).encode() for n in layers])
        for layer in layers:
            group, names = dst.create_group(rename(layer)), []
            for weight in map(_text, src[layer].attrs["weight_names"]):
                variable = weight.split("/")[-1]
                if variable == "kernel" and "depthwise" in layer:
                    variable = "depthwise_kernel"
                renamed = f"{rename(layer)}/{variable}:0"
                group.create_dataset(renamed, data=src[layer][weight][()])
                names.append(renamed.encode())
            group.attrs["weight_names"] = np.array(names, dtype=bytes) if names else np.array([])


@pytest.fixture(scope="module")
def keras_case(tmp_path_factory):
    """The Keras model, its feature maps (NHWC) on a random image, the image, and its files."""
    tmp = tmp_path_factory.mktemp("keras")
    model = _random_keras_model()
    image = np.random.default_rng(1).uniform(0, 1, (2, *SIZE, 3)).astype(np.float32)  # RGB in [0, 1]
    taps = keras.Model(model.input, [model.get_layer(name).output for name in TAPS])
    want = [keras.ops.convert_to_numpy(t) for t in taps(image * 2 - 1)]  # Keras's x / 127.5 - 1
    files = {"legacy": tmp / "keras3_legacy.h5", "published": tmp / "published.h5", "keras2": tmp / "k2.h5"}
    _write_legacy(model, files["legacy"])
    _keras2_layout(files["legacy"], files["published"], first_names=True)
    _keras2_layout(files["legacy"], files["keras2"], first_names=False)
    files["weights.h5"] = tmp / "model.weights.h5"
    model.save_weights(files["weights.h5"])
    files["unnamed"] = tmp / "unnamed.weights.h5"  # Keras 3 layout without recorded layer names
    files["unnamed"].write_bytes(files["weights.h5"].read_bytes())
    with h5py.File(files["unnamed"], "a") as handle:
        handle.visititems(lambda _, obj: obj.attrs.pop("name") if "name" in obj.attrs else None)
    return model, want, image, files


def _torch_input(image: np.ndarray) -> torch.Tensor:
    """The student's input for ``image`` (NHWC, [0, 1]) under the keras config's mean and std."""
    config = ModelConfig().with_encoder_style("keras")
    x = (image - np.array(config.mean, np.float32)) / np.array(config.std, np.float32)
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def _encoder_maps(encoder, image) -> list[np.ndarray]:
    with torch.no_grad():
        return [t.numpy().transpose(0, 2, 3, 1) for t in encoder.eval()(_torch_input(image))]


def _max_diff(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    assert [g.shape for g in got] == [w.shape for w in want]
    return max(float(np.abs(g - w).max()) for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("layout", ["published", "keras2", "legacy", "weights.h5", "unnamed"])
def test_imported_encoder_equals_keras(keras_case, layout):
    _, want, image, files = keras_case
    assert is_keras_weights_file(files[layout])
    student = build_student("L", encoder_style="keras", encoder_weights=files[layout])
    got = _encoder_maps(student.encoder, image)
    assert [g.shape[1:3] for g in got] == [(SIZE[0] // s, SIZE[1] // s) for s in (4, 8, 16, 32)]
    assert min(float(w.std()) for w in want) > 0.1  # the maps are not trivially near zero
    assert _max_diff(got, want) < TOL


def test_every_convention_matters(keras_case):
    """Negative controls: the same weights with PyTorch's padding or epsilon are far from Keras."""
    _, want, image, files = keras_case
    state = keras_to_torchvision(read_keras_mobilenet_v2(files["legacy"]))
    torchvision_style = build_student("L").encoder
    torchvision_style.load_state_dict(state)
    assert _max_diff(_encoder_maps(torchvision_style, image), want) > 100 * TOL
    keras_pad_torch_eps = build_student("L", encoder_style="keras").encoder
    keras_pad_torch_eps.load_state_dict(state)
    for module in keras_pad_torch_eps.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.eps == KERAS_BN_EPS
            module.eps = 1e-5
    assert _max_diff(_encoder_maps(keras_pad_torch_eps, image), want) > 100 * TOL


def test_converted_weights_match_keras_variables(keras_case):
    """Names and layouts against Keras's own variables; the dict loads into torchvision strictly."""
    model, _, _, files = keras_case
    weights = read_keras_mobilenet_v2(files["published"])
    variables = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}
    assert keras_shapes(0.35) == {k: tuple(v.shape) for k, v in variables.items() if k in weights}
    assert set(weights) == set(keras_shapes(0.35)) and len(weights) == 51 + 51 * 4  # kernels, batch norms
    for key, value in weights.items():
        np.testing.assert_array_equal(value, variables[key])
    state = keras_to_torchvision(weights)
    torchvision_encoder = torch.nn.Module()
    torchvision_encoder.features = mobilenet_v2(weights=None, width_mult=0.35).features[:18]
    torchvision_encoder.load_state_dict(state, strict=True)
    kernel = variables["block_4_depthwise/kernel"]  # (3, 3, 96, 1) -> (96, 1, 3, 3)
    np.testing.assert_array_equal(state["features.5.conv.1.0.weight"][7, 0].numpy(), kernel[:, :, 7, 0])
    kernel = variables["block_4_project/kernel"]  # (1, 1, 96, 16) -> (16, 96, 1, 1)
    assert float(state["features.5.conv.2.weight"][3, 50, 0, 0]) == kernel[0, 0, 50, 3]
    np.testing.assert_array_equal(
        state["features.5.conv.3.running_var"].numpy(), variables["block_4_project_BN/moving_variance"]
    )


def test_nested_models_read_the_same(keras_case, tmp_path):
    """MobileNetV2 inside another model (both layouts), or under ``model_weights`` (a whole-model
    file), gives the same weights as the plain file."""
    model, _, _, files = keras_case
    outer = keras.Sequential([keras.Input((*SIZE, 3)), model, keras.layers.GlobalAveragePooling2D()])
    _write_legacy(outer, tmp_path / "outer.h5")
    outer.save_weights(tmp_path / "outer.weights.h5")
    with h5py.File(tmp_path / "whole_model.h5", "w") as handle:  # model.save()'s legacy layout
        save_weights_to_hdf5_group(handle.create_group("model_weights"), model)
    plain = read_keras_mobilenet_v2(files["legacy"])
    for name in ("outer.h5", "outer.weights.h5", "whole_model.h5"):
        nested = read_keras_mobilenet_v2(tmp_path / name)
        assert set(nested) == set(plain)
        assert all(np.array_equal(nested[k], plain[k]) for k in plain)


@pytest.mark.parametrize("dynamo", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_onnx_export_equals_keras(keras_case, tmp_path, dynamo):
    """The keras-style encoder exported as trt8 (legacy exporter, opset 13: five Pad nodes) and trt10
    (dynamo, opset 20: the padding folded into the convolutions' pads) export it, run by ORT."""
    _, want, image, files = keras_case
    student = build_student("L", encoder_style="keras", encoder_weights=files["weights.h5"]).eval()

    class Taps(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = student.encoder

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(self.encoder(x))

    path = tmp_path / "encoder.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(Taps().eval(), (_torch_input(image),), str(path), dynamo=True, opset_version=20,
                              external_data=False, input_names=["x"], verbose=False)  # fmt: skip
        else:
            torch.onnx.export(Taps().eval(), (_torch_input(image),), str(path), dynamo=False, opset_version=13,
                              input_names=["x"], do_constant_folding=True)  # fmt: skip
    pads = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Pad"]
    assert len(pads) == (0 if dynamo else 5)  # the stem and the four stride-2 depthwise convolutions
    x = _torch_input(image).numpy()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    for sess in (
        onnx_checks.session(path),  # as written
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]),  # optimised
    ):
        got = [t.transpose(0, 2, 3, 1) for t in onnx_checks.run(sess, x)]
        assert _max_diff(got, want) < TOL


def test_torchvision_checkpoint_still_loads(tmp_path):
    torch.manual_seed(3)
    source = mobilenet_v2(weights=None, width_mult=0.35).state_dict()
    path = tmp_path / "tv.pth"
    torch.save(source, path)
    assert not is_keras_weights_file(path)
    model = build_student("XS")
    load_encoder_weights(model, path)
    for key, value in model.encoder.state_dict().items():
        torch.testing.assert_close(value, source[key])


def _fails(match: str, model, path) -> None:
    with pytest.raises(ValueError, match=match) as err:
        load_encoder_weights(model, path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_torchvision_style_model_is_refused(keras_case):
    _, _, _, files = keras_case
    model = build_student("XS")
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    _fails(r"need the keras encoder style .* this encoder is 'torchvision'", model, files["published"])
    with pytest.raises(ValueError, match=r"published\.h5: Keras MobileNetV2 weights need the keras"):
        load_keras_encoder(model.encoder, files["published"])
    assert all(torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())


@pytest.mark.parametrize(("alpha", "writer"), [(1.0, "legacy"), (0.5, "weights.h5")])
def test_other_alpha_is_named(tmp_path, alpha, writer):
    model = _random_keras_model(alpha)
    if writer == "legacy":
        _write_legacy(model, path := tmp_path / f"alpha_{alpha}.h5")
    else:
        model.save_weights(path := tmp_path / f"alpha_{alpha}.weights.h5")
    student = build_student("XS", encoder_style="keras")
    _fails(
        rf"has shape .*, alpha 0\.35 needs .*; the shapes are those of alpha {alpha} weights", student, path
    )


def test_classifier_only_and_incomplete_files_name_the_first_missing_layer(keras_case, tmp_path):
    keras_model = build_student("XS", encoder_style="keras")
    head = keras.Sequential([keras.Input((1280,)), keras.layers.Dense(1000, name="predictions")])
    _write_legacy(head, tmp_path / "head.h5")
    _fails(r"not Keras MobileNetV2 encoder weights: no weights for layer Conv1 \(the first of 102",
           keras_model, tmp_path / "head.h5")  # fmt: skip
    _, _, _, files = keras_case
    cut = tmp_path / "cut.h5"
    cut.write_bytes(files["published"].read_bytes())
    with h5py.File(cut, "a") as handle:
        names = [_text(n) for n in handle.attrs["layer_names"]]
        kept = [n for n in names if not re.match(r"(mobl|bn)7_conv_7_", n)]  # block 7's six layers
        assert len(kept) == len(names) - 6
        handle.attrs["layer_names"] = np.array([n.encode() for n in kept])
    _fails(r"no weights for layer block_7_expand \(the first of 6 of the 102", keras_model, cut)


def test_unreadable_and_foreign_hdf5_are_refused(keras_case, tmp_path):
    model = build_student("XS", encoder_style="keras")
    _, _, _, files = keras_case
    data = files["legacy"].read_bytes()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(data[: len(data) // 2])
    assert is_keras_weights_file(truncated)
    _fails(r"truncated\.h5: not a readable HDF5 file \(.*\); is it truncated\?", model, truncated)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as handle:
        handle.create_dataset("images", data=np.zeros((2, 3)))
    _fails(r"an HDF5 file, but not Keras weights", model, foreign)
    not_hdf5 = tmp_path / "state.pt"
    torch.save(model.encoder.state_dict(), not_hdf5)
    with pytest.raises(
        ValueError, match=r"state\.pt: not a readable HDF5 file \(.*\); it has no HDF5 signature"
    ):
        read_keras_mobilenet_v2(not_hdf5)
