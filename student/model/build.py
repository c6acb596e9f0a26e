"""Building a student by name: variant (decoder blocks kept), decoder, encoder style, ImageNet start.

``build_student`` turns the names a config or a command line holds into a ``DepthSegStudent``
(``edgedepth.student.model.network``) and optionally loads encoder weights
(``edgedepth.student.model.encoder_weights``); ``ModelConfig.build`` calls it.
"""

from __future__ import annotations

from pathlib import Path

from edgedepth.student.model.depth_code import MAX_LOG_DEPTH, MIN_LOG_DEPTH
from edgedepth.student.model.encoder_weights import load_encoder_weights
from edgedepth.student.model.network import DEFAULT_ARCH, DepthSegStudent, decoder_spec, variant_blocks


def build_student(
    variant: str = "L",
    num_classes: int = 19,
    seg: bool = True,
    encoder_weights: str | Path | None = None,
    return_classes: bool = False,
    depth_space: str = "log",
    arch: str = DEFAULT_ARCH,
    encoder_style: str = "torchvision",
    depth_range: tuple[float, float] = (MIN_LOG_DEPTH, MAX_LOG_DEPTH),
) -> DepthSegStudent:
    """Build a student variant (L, M, S, XS keep 4, 3, 2, 1 decoder blocks), randomly initialised.

    ``arch`` names the decoder (``ARCHS``: ``paper`` or ``fast``); ``encoder_style`` the encoder's
    padding and batch-norm convention (``torchvision`` or ``keras``); ``depth_range`` (metres) the
    log-depth head's range m, M. ``encoder_weights`` is an optional ImageNet MobileNetV2 (width
    0.35) file, Keras HDF5 or torchvision state dict (``load_encoder_weights``); nothing is ever
    downloaded.
    """
    spec = decoder_spec(arch)
    model = DepthSegStudent(
        variant_blocks(variant),
        num_classes,
        seg,
        return_classes,
        depth_space,
        decoder_widths=spec.widths,
        decoder_bottlenecks=spec.bottlenecks,
        expand_ratio=spec.expand_ratio,
        encoder_style=encoder_style,
        depth_range=depth_range,
    )
    if encoder_weights is not None:
        load_encoder_weights(model, encoder_weights)
    return model


__all__ = ["build_student"]
