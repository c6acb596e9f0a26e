"""The encoder's ImageNet start: MobileNetV2 (width 0.35) weights loaded by the file's type.

Two kinds of file are accepted: the paper's Keras weights (HDF5, read by
``edgedepth.student.model.keras_weights``, which needs the ``keras`` encoder style) and a
torchvision state dict (the ``torchvision`` style's layout). This module stands above both the
network and the Keras reader, so neither needs the other to load weights.
"""

from __future__ import annotations

from pathlib import Path

from edgedepth.common import load_state_dict_file
from edgedepth.student.model.keras_weights import is_keras_weights_file, load_keras_encoder
from edgedepth.student.model.network import DepthSegStudent, check_shapes


def load_encoder_weights(model: DepthSegStudent, path: str | Path) -> None:
    """Load ImageNet MobileNetV2 (width 0.35) weights into the encoder, by the file's type.

    An HDF5 file is Keras weights (the paper's ``..._0.35_224_no_top.h5``): imported by
    ``edgedepth.student.model.keras_weights.load_keras_encoder``, which needs
    ``encoder_style="keras"``. Anything else is a torchvision state dict: keys ``features.18.*`` and
    ``classifier.*`` (the parts the student drops) are ignored; every other encoder key must be
    present with the expected shape.
    """
    if is_keras_weights_file(path):
        load_keras_encoder(model, path)
        return
    state = load_state_dict_file(path)
    wanted = model.encoder.state_dict()
    picked = {k: v for k, v in state.items() if k in wanted}
    missing = sorted(set(wanted) - set(picked))
    if missing:
        raise ValueError(
            f"{path}: not a torchvision MobileNetV2 checkpoint: {len(missing)} encoder keys missing "
            f"(first: {missing[0]})"
        )
    check_shapes(path, picked, wanted, hint="is it a width_mult=0.35 checkpoint?")
    model.encoder.load_state_dict(picked, strict=True)


__all__ = ["load_encoder_weights"]
