"""The paper's encoder start: Keras's ImageNet MobileNetV2 (alpha 0.35, no top) in the student.

Keras applications publishes ``mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5``;
this module reads it (and the same weights as written by Keras 3) with h5py only, never importing
Keras and never unpickling anything, and maps it onto torchvision's ``mobilenet_v2(width_mult=0.35)
.features[0:18]``, the student's encoder. Keras's ``Conv_1`` / ``Conv_1_bn`` (1280 channels) and any
classifier are ignored. Files accepted:

- the legacy HDF5 layout (``save_weights`` of Keras 2, the published file, Keras 3's
  ``legacy_h5_format``): root attribute ``layer_names``, one group per layer whose attribute
  ``weight_names`` lists datasets such as ``Conv1/kernel:0`` (Keras 2) or ``Conv1/kernel`` (Keras 3);
  a whole-model file nests that under ``model_weights``. The published files keep the layer names
  of the first Keras MobileNetV2 (``mobl3_conv_3_expand``, ``bn3_conv_3_bn_expand``, ...; Keras
  loads them by position): they are read as today's names (``block_3_expand``,
  ``block_3_expand_BN``, ...), see ``LEGACY_NAMES``;
- the Keras 3 ``.weights.h5`` layout: ``layers/<path>/vars/<i>``, the layer name in the ``vars``
  group's ``name`` attribute (files without it are matched by the path Keras derives from the
  layer class and order: ``conv2d_3``, ``batch_normalization_7``, ...).

Layouts: Keras ``Conv2D`` kernels are (kh, kw, in, out) and become (out, in, kh, kw);
``DepthwiseConv2D`` kernels (kh, kw, in, 1) become (in, 1, kh, kw); batch norm's gamma, beta,
moving_mean and moving_variance become weight, bias, running_mean and running_var. Keras's
batch-norm epsilon (1e-3) and its bottom/right padding before the stride-2 convolutions are not
in the file: they are the encoder's ``keras`` style (``edgedepth.student.model.network``), so ``load_keras_encoder``
refuses a torchvision-style encoder. Keras's input scaling (x / 127.5 - 1, i.e. mean = std = 0.5
of x / 255) is ``ModelConfig.with_encoder_style("keras")``. Every refusal is one ValueError line
naming the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import Tensor, nn

from edgedepth.student.model.network import ENCODER_WIDTH, MobileNetV2Encoder

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
KERAS_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
"""The widths Keras publishes ImageNet MobileNetV2 weights for."""
BN_VARS = ("gamma", "beta", "moving_mean", "moving_variance")
"""Keras batch-norm variables, in the order Keras 3 stores them (``vars/0`` .. ``vars/3``)."""
_BN_TORCH = ("weight", "bias", "running_mean", "running_var")
# Keras blocks 0..16: (output filters before alpha, depthwise stride, expansion)
_BLOCKS = ((16, 1, 1), (24, 2, 6), (24, 1, 6), (32, 2, 6), (32, 1, 6), (32, 1, 6), (64, 2, 6))
_BLOCKS += ((64, 1, 6),) * 3 + ((96, 1, 6),) * 3 + ((160, 2, 6),) + ((160, 1, 6),) * 2 + ((320, 1, 6),)
_CLASS_PATHS = {"conv": "conv2d", "depthwise": "depthwise_conv2d", "bn": "batch_normalization"}


def _encoder_layers() -> list[tuple[str, str, str]]:
    """(Keras layer name, kind, torchvision ``features.*`` prefix) of the encoder, in Keras's order."""
    layers = [("Conv1", "conv", "features.0.0"), ("bn_Conv1", "bn", "features.0.1")]
    layers += [
        ("expanded_conv_depthwise", "depthwise", "features.1.conv.0.0"),
        ("expanded_conv_depthwise_BN", "bn", "features.1.conv.0.1"),
        ("expanded_conv_project", "conv", "features.1.conv.1"),
        ("expanded_conv_project_BN", "bn", "features.1.conv.2"),
    ]
    for block in range(1, len(_BLOCKS)):
        prefix, torch_prefix = f"block_{block}_", f"features.{block + 1}.conv"
        layers += [
            (prefix + "expand", "conv", f"{torch_prefix}.0.0"),
            (prefix + "expand_BN", "bn", f"{torch_prefix}.0.1"),
            (prefix + "depthwise", "depthwise", f"{torch_prefix}.1.0"),
            (prefix + "depthwise_BN", "bn", f"{torch_prefix}.1.1"),
            (prefix + "project", "conv", f"{torch_prefix}.2"),
            (prefix + "project_BN", "bn", f"{torch_prefix}.3"),
        ]
    return layers


ENCODER_LAYERS = _encoder_layers()
"""The 102 Keras layers the student's encoder takes: (name, kind, torchvision prefix)."""
_KIND = {name: kind for name, kind, _ in ENCODER_LAYERS}


def _legacy_names() -> dict[str, str]:
    names = {}
    for block in range(len(_BLOCKS)):
        today = f"block_{block}_" if block else "expanded_conv_"
        for part in ("expand", "depthwise", "project") if block else ("depthwise", "project"):
            names[f"mobl{block}_conv_{block}_{part}"] = today + part
            names[f"bn{block}_conv_{block}_bn_{part}"] = today + part + "_BN"
    return names


LEGACY_NAMES = _legacy_names()
"""The published files' layer names -> today's Keras names (``Conv1``, ``bn_Conv1`` are unchanged)."""


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Keras's (and torchvision's) channel rounding."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def keras_shapes(alpha: float) -> dict[str, tuple[int, ...]]:
    """Keras weight name -> shape for the MobileNetV2 encoder of width ``alpha`` (Keras's rules)."""
    channels = _make_divisible(32 * alpha)
    shapes: dict[str, tuple[int, ...]] = {"Conv1/kernel": (3, 3, 3, channels)}
    shapes.update({f"bn_Conv1/{v}": (channels,) for v in BN_VARS})
    for block, (filters, _, expansion) in enumerate(_BLOCKS):
        prefix = f"block_{block}_" if block else "expanded_conv_"
        out, hidden = _make_divisible(int(filters * alpha)), expansion * channels
        if block:
            shapes[prefix + "expand/kernel"] = (1, 1, channels, hidden)
            shapes.update({f"{prefix}expand_BN/{v}": (hidden,) for v in BN_VARS})
        shapes[prefix + "depthwise/kernel"] = (3, 3, hidden, 1)
        shapes.update({f"{prefix}depthwise_BN/{v}": (hidden,) for v in BN_VARS})
        shapes[prefix + "project/kernel"] = (1, 1, hidden, out)
        shapes.update({f"{prefix}project_BN/{v}": (out,) for v in BN_VARS})
        channels = out
    return shapes


def is_keras_weights_file(path: str | Path) -> bool:
    """True when ``path`` is an HDF5 file (signature at byte 0 or 512 * 2**k), however damaged."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, 2)
            offset = 0
            while offset + len(HDF5_SIGNATURE) <= size:
                handle.seek(offset)
                if handle.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                    return True
                offset = 512 if offset == 0 else offset * 2
    except OSError:
        return False
    return False


def read_keras_mobilenet_v2(path: str | Path) -> dict[str, np.ndarray]:
    """The encoder weights of a Keras MobileNetV2 (alpha 0.35) file, float32, Keras layouts.

    Keys are ``<layer>/<variable>`` as Keras 3 names them (``Conv1/kernel``,
    ``block_3_depthwise/kernel``, ``bn_Conv1/moving_variance``): ``:0`` suffixes and Keras 2's
    ``depthwise_kernel`` are normalised. Only the 102 encoder layers are returned; others are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Keras weights file not found")
    try:
        with h5py.File(path, "r") as handle:
            found = _read_any(handle, path)
    except (OSError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "unreadable"
        hint = "is it truncated?" if is_keras_weights_file(path) else "it has no HDF5 signature"
        raise ValueError(f"{path}: not a readable HDF5 file ({reason}); {hint}") from None
    _check(found, path)
    return {key: found[key] for key in keras_shapes(ENCODER_WIDTH)}


def _read_any(handle: h5py.File, path: Path) -> dict[str, np.ndarray]:
    root = handle["model_weights"] if isinstance(handle.get("model_weights"), h5py.Group) else handle
    if "layer_names" in root.attrs:
        return _read_legacy(root, path)
    if isinstance(handle.get("layers"), h5py.Group):
        return _read_keras3(handle["layers"], path)
    raise ValueError(
        f"{path}: an HDF5 file, but not Keras weights (no 'layer_names' attribute, no 'layers' group)"
    )


def _text(value: object) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _array(dataset: object, name: str, path: Path) -> np.ndarray:
    if not isinstance(dataset, h5py.Dataset) or dataset.dtype.kind not in "fiu":
        raise ValueError(f"{path}: {name} is not a numeric dataset")
    return np.asarray(dataset[()], dtype=np.float32)


def _read_legacy(root: h5py.Group, path: Path) -> dict[str, np.ndarray]:
    """``layer_names`` -> groups -> ``weight_names`` -> datasets; keyed by layer and variable."""
    found = {}
    for layer in (_text(n) for n in root.attrs["layer_names"]):
        group = root.get(layer)
        if not isinstance(group, h5py.Group):
            raise ValueError(f"{path}: layer {layer} is listed in layer_names but has no group")
        for weight in (_text(n) for n in group.attrs.get("weight_names", [])):
            parts = weight.removesuffix(":0").split("/")
            owner = LEGACY_NAMES.get(layer, layer)
            if owner not in _KIND and len(parts) > 1:  # a nested model's group: its weights' names
                owner = LEGACY_NAMES.get(parts[-2], parts[-2])
            variable = "kernel" if parts[-1] == "depthwise_kernel" else parts[-1]
            if owner not in _KIND:
                continue  # Conv_1, the classifier, other networks' layers
            if weight not in group:
                raise ValueError(f"{path}: weight {weight} of layer {layer} has no dataset")
            if f"{owner}/{variable}" in found:
                raise ValueError(f"{path}: weight {owner}/{variable} appears twice (again in layer {layer})")
            found[f"{owner}/{variable}"] = _array(group[weight], f"{layer}/{weight}", path)
    return found


def _read_keras3(layers: h5py.Group, path: Path) -> dict[str, np.ndarray]:
    """``layers/<path>/vars/<i>``: by the ``vars`` group's ``name``, else by class path and order."""
    named: dict[str, h5py.Group] = {}

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Group) and name.split("/")[-1] == "vars" and "name" in obj.attrs:
            layer = LEGACY_NAMES.get(_text(obj.attrs["name"]), _text(obj.attrs["name"]))
            if layer in _KIND and layer in named:
                raise ValueError(
                    f"{path}: layer {layer} appears twice (under {named[layer].name} and /{name})"
                )
            named[layer] = obj

    layers.visititems(visit)
    if not named:  # no layer names recorded: Keras names the paths by class, in layer order
        counts = dict.fromkeys(_CLASS_PATHS.values(), 0)
        for layer, kind, _ in ENCODER_LAYERS:
            base = _CLASS_PATHS[kind]
            vars_group = layers.get(f"{base}_{counts[base]}/vars" if counts[base] else f"{base}/vars")
            counts[base] += 1
            if isinstance(vars_group, h5py.Group):
                named[layer] = vars_group
    found = {}
    for layer, group in named.items():
        if layer not in _KIND:
            continue
        names = BN_VARS if _KIND[layer] == "bn" else ("kernel",)
        stored = sorted(group.keys(), key=lambda k: int(k) if k.isdigit() else -1)
        if stored != [str(i) for i in range(len(names))]:
            raise ValueError(
                f"{path}: layer {layer} holds variables {stored}, expected {len(names)} "
                f"({', '.join(names)}); is it MobileNetV2 without biases?"
            )
        for index, variable in enumerate(names):
            found[f"{layer}/{variable}"] = _array(group[str(index)], f"{layer}/vars/{index}", path)
    return found


def _check(found: Mapping[str, np.ndarray], path: Path) -> None:
    """One line for a file missing encoder layers or holding another width."""
    wanted = keras_shapes(ENCODER_WIDTH)
    missing = [key for key in wanted if key not in found]
    if missing:
        layer, variable = missing[0].split("/")
        held = any(key.startswith(layer + "/") for key in found)
        what = f"layer {layer} has no {variable}" if held else f"no weights for layer {layer}"
        incomplete = len({key.split("/")[0] for key in missing})
        raise ValueError(
            f"{path}: not Keras MobileNetV2 encoder weights: {what} "
            f"(the first of {incomplete} of the {len(ENCODER_LAYERS)} encoder layers missing or incomplete)"
        )
    for key, shape in wanted.items():
        if tuple(found[key].shape) != shape:
            guess = [a for a in KERAS_ALPHAS if _matches(found, keras_shapes(a))]
            hint = (
                f"the shapes are those of alpha {guess[0]} weights"
                if guess
                else "the shapes match no Keras MobileNetV2 alpha"
            )
            raise ValueError(
                f"{path}: {key} has shape {tuple(found[key].shape)}, alpha {ENCODER_WIDTH} needs {shape}; "
                f"{hint} (the student needs alpha {ENCODER_WIDTH}: "
                f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5)"
            )


def _matches(found: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]]) -> bool:
    return all(key in found and tuple(found[key].shape) == shape for key, shape in shapes.items())


def keras_to_torchvision(weights: Mapping[str, np.ndarray]) -> dict[str, Tensor]:
    """Keras encoder weights (``read_keras_mobilenet_v2``) -> torchvision ``features.{0..17}.*``.

    Conv2D (kh, kw, in, out) -> (out, in, kh, kw); DepthwiseConv2D (kh, kw, in, 1) -> (in, 1, kh, kw);
    batch norm -> weight, bias, running_mean, running_var and ``num_batches_tracked`` = 0, so the
    result loads strictly into ``mobilenet_v2(width_mult=0.35).features[:18]``.
    """
    state: dict[str, Tensor] = {}
    for layer, kind, prefix in ENCODER_LAYERS:
        if kind == "bn":
            for keras_var, torch_var in zip(BN_VARS, _BN_TORCH, strict=True):
                state[f"{prefix}.{torch_var}"] = torch.from_numpy(np.array(weights[f"{layer}/{keras_var}"]))
            state[f"{prefix}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
        else:
            kernel = np.asarray(weights[f"{layer}/kernel"], dtype=np.float32)
            order = (2, 3, 0, 1) if kind == "depthwise" else (3, 2, 0, 1)
            state[f"{prefix}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(order)))
    return state


def load_keras_encoder(model: nn.Module, path: str | Path) -> None:
    """Load a Keras MobileNetV2 (alpha 0.35) weights file into a keras-style encoder, strictly.

    ``model`` is a ``DepthSegStudent`` or its ``MobileNetV2Encoder``; it must have been built with
    ``encoder_style="keras"`` (Keras's padding and batch-norm epsilon), else ValueError.
    """
    encoder = model if isinstance(model, MobileNetV2Encoder) else getattr(model, "encoder", None)
    if not isinstance(encoder, MobileNetV2Encoder):
        raise ValueError(f"{path}: Keras weights load into a student or its MobileNetV2 encoder only")
    if encoder.style != "keras":
        raise ValueError(
            f"{path}: Keras MobileNetV2 weights need the keras encoder style (bottom/right padding, "
            f"batch-norm epsilon 1e-3), this encoder is {encoder.style!r}; build it with "
            "encoder_style='keras' (ModelConfig.with_encoder_style('keras'))"
        )
    state = keras_to_torchvision(read_keras_mobilenet_v2(path))
    encoder.load_state_dict(state, strict=True)


__all__ = [
    "BN_VARS",
    "ENCODER_LAYERS",
    "KERAS_ALPHAS",
    "LEGACY_NAMES",
    "is_keras_weights_file",
    "keras_shapes",
    "keras_to_torchvision",
    "load_keras_encoder",
    "read_keras_mobilenet_v2",
]
