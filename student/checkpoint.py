"""Safe loading of state-dict files (never unpickles arbitrary objects)."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from torch import Tensor

NESTED_KEYS = ("state_dict", "model", "model_state")
"""Keys under which common checkpoint files nest their state dict."""


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from ``path`` with ``torch.load(weights_only=True)``.

    Accepts a plain state dict or one nested under ``state_dict``, ``model`` or ``model_state``; a
    ``module.`` prefix (from ``DataParallel``) is removed. Anything else raises a one-line ValueError
    naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: refused to load: {_refusal_reason(str(err))}") from None
    except (RuntimeError, EOFError, OSError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "empty or truncated file"
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None
    for key in NESTED_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path}: does not hold a state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _refusal_reason(message: str) -> str:
    """Condense torch's multi-paragraph weights-only refusal into one clause."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", message)
    if found:
        return f"it holds the Python object {found.group(1)}, and only tensors and plain types are allowed"
    return "its content is not a plain tensor checkpoint (arbitrary pickles are never loaded)"
