"""Safe loading of checkpoint files: tensors and plain types only, never arbitrary objects.

Every checkpoint the toolkit reads (teachers, student, encoder weights) goes through
``safe_load``: ``torch.load(weights_only=True)``, plus an explicit allow-list for the NumPy scalar
types some public checkpoints carry in their metadata (VainF's ``best_score`` is a
``numpy.float64``). Anything else is refused with a one-line error naming the file; torch's advice
to load with the unsafe setting is never repeated.

torch is imported inside the functions that need it, so ``sha256_file`` (which the label driver
uses) costs no torch import.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import Tensor

NESTED_KEYS = ("state_dict", "model_state", "model")
"""Keys under which common checkpoint files nest their state dict, in the order tried."""

TORCHSCRIPT_REFUSAL = (
    "a TorchScript archive is not a checkpoint; save the model's state dict instead "
    "(torch.save(model.state_dict(), path))"
)


def _numpy_scalar_globals() -> list[Any]:
    """NumPy scalar reconstruction as pickled by NumPy 1.x and 2.x, plus the dtypes it needs."""
    import numpy as np
    from numpy._core.multiarray import scalar

    allowed: list[Any] = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype]
    allowed += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    return allowed


def safe_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with the NumPy-scalar allow-list; one-line errors."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    if _is_torchscript(path):
        raise ValueError(f"{path}: refused to load: {TORCHSCRIPT_REFUSAL}")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's hints name the unsafe setting; we never suggest it
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: refused to load: {_refusal_reason(str(err))}") from None
    except (RuntimeError, EOFError, OSError, UnicodeDecodeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "empty or truncated file"
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({_without_advice(reason)})") from None
    except Exception as err:  # garbage bytes make the unpickler fail in many ways (KeyError, IndexError, ...)
        raise ValueError(
            f"{path}: not a readable PyTorch checkpoint ({type(err).__name__} while unpickling)"
        ) from None


def _is_torchscript(path: Path) -> bool:
    """A zip archive holding TorchScript code (``<archive>/code/`` or ``constants.pkl``)."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    return any(n.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for n in names)


def _without_advice(reason: str) -> str:
    """torch's reason without any sentence that recommends turning ``weights_only`` off."""
    if "TorchScript" in reason:
        return TORCHSCRIPT_REFUSAL
    sentences = re.split(r"(?<=[.!?])\s+", reason)
    kept = [s for s in sentences if "weights_only" not in s]
    return " ".join(kept).strip() or "its content is not a plain tensor checkpoint"


def _refusal_reason(message: str) -> str:
    """Condense torch's multi-paragraph weights-only refusal into one clause."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", message)
    if found:
        return f"it holds the Python object {found.group(1)}, and only tensors and plain types are allowed"
    return "its content is not a plain tensor checkpoint (arbitrary pickles are never loaded)"


def state_dict_from(obj: Any, source: str | Path, prefix: str = "module.") -> dict[str, Tensor]:
    """The state dict inside a loaded checkpoint (plain or nested), with ``prefix`` removed."""
    from torch import Tensor

    for key in NESTED_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{source}: does not hold a state dict (a mapping of names to tensors)")
    if not all(isinstance(k, str) for k in obj):
        raise ValueError(f"{source}: does not hold a state dict (its keys are not all names)")
    return {k.removeprefix(prefix): v for k, v in obj.items()}


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from a checkpoint file safely (see ``safe_load`` and ``state_dict_from``)."""
    return state_dict_from(safe_load(path), path)


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file, recorded in every shard made with it."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
