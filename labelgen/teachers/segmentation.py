"""Segmentation teacher: a Cityscapes DeepLab (VainF or smp checkpoint) labelling KITTI frames.

Two checkpoint formats are supported:

* ``vainf``: VainF/DeepLabV3Plus-Pytorch files (the public Cityscapes teachers are
  ``deeplabv3plus_mobilenet`` and ``deeplabv3plus_resnet101``, both output stride 16). The
  weights live under ``model_state``; the model is rebuilt in ``deeplab_vainf`` because neither
  smp nor torchvision reproduces VainF's V3+ names and geometry.
* ``smp``: segmentation-models-pytorch ``DeepLabV3`` / ``DeepLabV3Plus`` state dicts (plain or
  nested under ``state_dict`` / ``model_state`` / ``model``), e.g. a teacher trained in-house.

Every file is read through ``edgedepth.common.checkpoints.safe_load`` and loaded strictly; a checkpoint
that does not fit the configured model fails with a one-line error naming the file and the first
mismatching keys. Prediction follows the public models' preprocessing (RGB / 255, ImageNet
mean/std) and returns train ids plus a confidence byte, round(255 * max softmax probability).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgedepth.common import safe_load, state_dict_from
from edgedepth.labelgen.cityscapes import CITYSCAPES_CLASSES
from edgedepth.labelgen.teachers import IMAGENET_MEAN, IMAGENET_STD
from edgedepth.labelgen.teachers.deeplab_vainf import (
    ARCHITECTURES,
    ASPP_RATES,
    build_vainf_deeplab,
    guess_architecture,
)

SMP_ARCHITECTURES = ("deeplabv3", "deeplabv3plus")
PRECISIONS = ("fp32", "fp16")
_SMP_DEFAULT_RATES = (12, 24, 36)  # smp's DeepLabV3 and DeepLabV3Plus default decoder_atrous_rates
_SHOWN_KEYS = 3  # how many keys of each kind a mismatch error names


@dataclass(frozen=True, kw_only=True)
class SegConfig:
    """Which segmentation teacher to load.

    ``encoder`` (an smp encoder name such as "resnet101" or "mobilenet_v2") and ``atrous_rates``
    only apply to smp models; ``atrous_rates=None`` keeps smp's default (12, 24, 36). The rates do
    not change any key, so a checkpoint trained with other rates would load silently: set them
    here. ``encoder_output_stride`` applies to both formats (VainF's ``--output_stride``, which
    also fixes VainF's ASPP rates; every released VainF checkpoint is 16).
    """

    format: str
    arch: str
    checkpoint: str
    encoder: str | None = None
    num_classes: int = 19
    encoder_output_stride: int = 16
    atrous_rates: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.format == "vainf":
            if self.arch not in ARCHITECTURES:
                raise ValueError(
                    f"unknown VainF architecture {self.arch!r}; expected one of {', '.join(ARCHITECTURES)}"
                )
            if self.atrous_rates is not None:
                raise ValueError(
                    "VainF models take their ASPP rates from encoder_output_stride; leave atrous_rates unset"
                )
        elif self.format == "smp":
            if self.arch not in SMP_ARCHITECTURES:
                raise ValueError(
                    f"unknown smp architecture {self.arch!r}; expected deeplabv3 or deeplabv3plus"
                )
            if not self.encoder:
                raise ValueError("smp segmentation models need an encoder name (e.g. 'resnet101')")
        else:
            raise ValueError(
                f"unknown segmentation checkpoint format {self.format!r}; expected 'vainf' or 'smp'"
            )
        if not 1 <= self.num_classes <= 255:
            raise ValueError(
                f"num_classes must be in 1..255 (train ids are stored as uint8), got {self.num_classes}"
            )
        if self.encoder_output_stride not in (8, 16):
            raise ValueError(f"encoder_output_stride must be 8 or 16, got {self.encoder_output_stride}")
        if self.atrous_rates is not None:
            object.__setattr__(self, "atrous_rates", tuple(int(r) for r in self.atrous_rates))
            if len(self.atrous_rates) != 3:
                raise ValueError(f"atrous_rates must hold three rates, got {list(self.atrous_rates)}")
        if not self.checkpoint:
            raise ValueError("a segmentation teacher needs a checkpoint file")

    def to_dict(self) -> dict[str, object]:
        """Plain-JSON record of the settings, for label provenance."""
        out: dict[str, object] = asdict(self)
        if self.format == "vainf":
            out.pop("encoder")
            out["atrous_rates"] = list(ASPP_RATES[self.encoder_output_stride])
        else:
            out["atrous_rates"] = list(self.atrous_rates or _SMP_DEFAULT_RATES)
        out["classes"] = list(CITYSCAPES_CLASSES) if self.num_classes == len(CITYSCAPES_CLASSES) else None
        out["normalization"] = {"scale": 1 / 255, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
        return out


def _build_smp(config: SegConfig) -> nn.Module:
    """The smp DeepLabV3 / V3+ named by ``config``, without downloading encoder weights."""
    import segmentation_models_pytorch as smp  # heavy import (timm), only needed for this format

    cls = smp.DeepLabV3 if config.arch == "deeplabv3" else smp.DeepLabV3Plus
    options: dict[str, object] = {}
    if config.atrous_rates is not None:
        options["decoder_atrous_rates"] = config.atrous_rates
    try:
        return cls(
            encoder_name=config.encoder,
            encoder_weights=None,
            classes=config.num_classes,
            encoder_output_stride=config.encoder_output_stride,
            **options,
        )
    except KeyError:
        raise ValueError(f"unknown smp encoder {config.encoder!r}") from None


def _smp_legacy_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Older smp DeepLabV3 files name the decoder ``decoder.0/1/2``; smp renames them on load."""
    renames = {"decoder.0.": "decoder.aspp.", "decoder.1.": "decoder.conv.", "decoder.2.": "decoder.bn."}
    out = {}
    for key, value in state.items():
        for old, new in renames.items():
            if key.startswith(old):
                key = new + key.removeprefix(old)
                break
        out[key] = value
    return out


def _layout(state: dict[str, torch.Tensor]) -> str:
    """A short guess of what a state dict is (format, architecture, class count), for error messages."""
    arch = guess_architecture(state)
    if arch:
        bias = state.get("classifier.classifier.3.bias" if "plus" in arch else "classifier.classifier.4.bias")
        what = f"VainF {arch}"
    elif "segmentation_head.0.bias" in state:
        bias, what = state["segmentation_head.0.bias"], "smp (encoder./decoder./segmentation_head. keys)"
    else:
        return "an unknown layout"
    return f"{what} with {bias.shape[0]} classes" if bias is not None and bias.ndim == 1 else what


def _shown(keys: list[str]) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > _SHOWN_KEYS else ""
    return ", ".join(keys[:_SHOWN_KEYS]) + more


def _mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """One line describing how ``state`` fails to fit ``model`` strictly (None when it fits)."""
    expected = model.state_dict()
    # BN counters absent from pre-0.4.1 files are filled in by torch; they are not a mismatch.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    parts = []
    if shapes:
        key = shapes[0]
        more = f" (and {len(shapes) - 1} more)" if len(shapes) > 1 else ""
        parts.append(
            f"shape mismatch {key}: checkpoint {tuple(state[key].shape)}, model {tuple(expected[key].shape)}{more}"
        )
    if missing:
        parts.append(f"missing {_shown(missing)}")
    if unexpected:
        parts.append(f"unexpected {_shown(unexpected)}")
    return "; ".join(parts) or None


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    problem = _mismatch(model, state)
    if problem is None:
        try:
            model.load_state_dict(state, strict=True)
            return
        except RuntimeError as err:  # not expected after the check; keep the error to one line
            problem = str(err).strip().splitlines()[0]
    raise ValueError(
        f"{path}: checkpoint does not fit {what} ({problem}); the checkpoint looks like {_layout(state)}"
    )


def load_segmenter(config: SegConfig, device: str | torch.device = "cpu") -> nn.Module:
    """The teacher network with the checkpoint's weights, on ``device``, in eval mode."""
    path = Path(config.checkpoint)
    if config.format == "vainf":
        model = build_vainf_deeplab(config.arch, config.num_classes, config.encoder_output_stride)
        what = f"VainF {config.arch} with {config.num_classes} classes"
    else:
        model = _build_smp(config)
        what = f"smp {config.arch}({config.encoder}) with {config.num_classes} classes"
    state = state_dict_from(safe_load(path, map_location="cpu"), path)
    if config.format == "smp" and config.arch == "deeplabv3":
        state = _smp_legacy_keys(state)
    _load_strict(model, state, path, what)
    return model.to(device).eval()


def input_multiple(model: nn.Module) -> int:
    """What H and W must be divisible by: smp checks the encoder's output stride, VainF needs nothing."""
    if getattr(model, "requires_divisible_input_shape", False):
        return int(model.encoder.output_stride)
    return 1


def _to_batch(images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    batch = np.stack(list(images)) if not isinstance(images, np.ndarray) else images
    if batch.ndim == 3:
        raise ValueError("expected a batch of images (N, H, W, 3); use predict_segmentation for one image")
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8 or 0 in batch.shape:
        raise ValueError(f"expected RGB uint8 images of shape (N, H, W, 3), got {batch.dtype} {batch.shape}")
    return batch


@torch.inference_mode()
def predict_segmentation_batch(
    model: nn.Module,
    images: Sequence[np.ndarray] | np.ndarray,
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
) -> tuple[np.ndarray, np.ndarray]:
    """Train ids and confidence bytes, each (N, H, W) uint8, for equal-size RGB uint8 images.

    Confidence is round(255 * max softmax probability). smp inputs are zero-padded (after
    normalisation, bottom/right) to the multiple smp requires and the logits cropped back.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"fp16 inference needs a CUDA device, got {device}")
    if model.training:
        raise ValueError("the segmentation model is in training mode; call model.eval() first")
    batch = _to_batch(images)
    height, width = batch.shape[1:3]
    x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    x = (x - mean) / std
    multiple = input_multiple(model)
    x = F.pad(x, (0, -width % multiple, 0, -height % multiple))
    with torch.autocast(device.type, dtype=torch.float16, enabled=precision == "fp16"):
        logits = model(x)
    probs = torch.softmax(logits[..., :height, :width].float(), dim=1)
    confidence, seg = probs.max(dim=1)
    seg_conf = torch.round(confidence * 255.0).to(torch.uint8)
    return seg.to(torch.uint8).cpu().numpy(), seg_conf.cpu().numpy()


def predict_segmentation(
    model: nn.Module, image: np.ndarray, *, device: str | torch.device = "cpu", precision: str = "fp32"
) -> tuple[np.ndarray, np.ndarray]:
    """(seg, seg_conf) for one HxWx3 uint8 RGB image: train ids and round(255 * max softmax prob)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"expected one RGB uint8 image of shape (H, W, 3), got shape {shape}")
    seg, seg_conf = predict_segmentation_batch(model, image[None], device=device, precision=precision)
    return seg[0], seg_conf[0]
