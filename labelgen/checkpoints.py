"""Safe loading of checkpoint files: tensors and plain types only, never arbitrary objects.

Every checkpoint the toolkit reads (teachers, student, encoder weights) goes through
``safe_load``: ``torch.load(weights_only=True)``, plus an explicit allow-list for the NumPy scalar
types some public checkpoints carry in their metadata (VainF's ``best_score`` is a
``numpy.float64``). Anything else is refused with a one-line error naming the file.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

NESTED_KEYS = ("state_dict", "model_state", "model")
"""Keys under which common checkpoint files nest their state dict, in the order tried."""


def _numpy_scalar_globals() -> list[Any]:
    """NumPy scalar reconstruction as pickled by NumPy 1.x and 2.x, plus the dtypes it needs."""
    from numpy._core.multiarray import scalar

    allowed: list[Any] = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype]
    allowed += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    return allowed


def safe_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with the NumPy-scalar allow-list; one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: refused to load: {_refusal_reason(str(err))}") from None
    except (RuntimeError, EOFError, OSError, UnicodeDecodeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "empty or truncated file"
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None
    except Exception as err:  # garbage bytes make the unpickler fail in many ways (KeyError, IndexError, ...)
        raise ValueError(
            f"{path}: not a readable PyTorch checkpoint ({type(err).__name__} while unpickling)"
        ) from None


def _refusal_reason(message: str) -> str:
    """Condense torch's multi-paragraph weights-only refusal into one clause."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", message)
    if found:
        return f"it holds the Python object {found.group(1)}, and only tensors and plain types are allowed"
    return "its content is not a plain tensor checkpoint (arbitrary pickles are never loaded)"


def state_dict_from(obj: Any, source: str | Path, prefix: str = "module.") -> dict[str, Tensor]:
    """The state dict inside a loaded checkpoint (plain or nested), with ``prefix`` removed."""
    for key in NESTED_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{source}: does not hold a state dict (a mapping of names to tensors)")
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
