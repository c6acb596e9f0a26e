"""Device names: auto, and a clear error for CUDA on a CPU-only machine."""

from __future__ import annotations

import pytest

from edgedepth.common.devices import resolve_device


def test_resolve_device(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="'cuda:1' requested but no CUDA device is available"):
        resolve_device("cuda:1")
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert resolve_device("auto") == "cuda"


def test_keep_freed_memory_applies_on_glibc():
    import platform

    from edgedepth.common.memory import keep_freed_memory

    applied = keep_freed_memory()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert applied is True
