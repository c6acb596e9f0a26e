"""Checkpoint files load safely: plain tensors only, never arbitrary pickled objects."""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from edgedepth.common.checkpoints import load_state_dict_file, safe_load, sha256_file


class Payload:
    """Not a tensor: a checkpoint holding this must never be unpickled."""


@pytest.mark.parametrize("nest", [None, "state_dict", "model", "model_state"])
def test_plain_and_nested_state_dicts_load_with_prefix_removed(tmp_path, nest):
    state = {"module.a.weight": torch.arange(3.0), "b": torch.ones(2)}
    path = tmp_path / "ckpt.pt"
    torch.save(state if nest is None else {nest: state, "epoch": 3}, path)
    loaded = load_state_dict_file(path)
    assert list(loaded) == ["a.weight", "b"]
    torch.testing.assert_close(loaded["a.weight"], torch.arange(3.0))


def test_object_checkpoint_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"weights": Payload()}, path)
    with pytest.raises(ValueError, match=r"evil\.pt: refused to load: it holds the Python object .*Payload"):
        load_state_dict_file(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (pickle.dumps([1, 2]), "refused to load: its content is not a plain tensor checkpoint"),
        (b"", r"not a readable PyTorch checkpoint \(empty or truncated file\)"),
    ],
)
def test_unreadable_files_get_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        load_state_dict_file(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_non_state_dict_and_missing_file(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ValueError, match=r"list\.pt: does not hold a state dict"):
        load_state_dict_file(path)
    with pytest.raises(FileNotFoundError, match=r"nope\.pt: checkpoint file not found"):
        load_state_dict_file(tmp_path / "nope.pt")


class Exploit:
    """Pickles to a call of os.system: what a malicious checkpoint looks like."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_code_executing_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": Exploit(marker)}, path)
    with pytest.raises(ValueError, match=r"evil\.pth: refused to load"):
        safe_load(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # proof the file is live: an unsafe load runs the command
    assert marker.exists()


def test_numpy_scalars_in_metadata_are_allowed(tmp_path):
    """VainF checkpoints keep best_score as a numpy.float64 beside model_state."""
    path = tmp_path / "best_deeplabv3plus_mobilenet_cityscapes_os16.pth"
    torch.save(
        {"model_state": {"a": torch.ones(2)}, "best_score": np.float64(0.721), "cur_itrs": 30000}, path
    )
    loaded = safe_load(path)
    assert loaded["best_score"] == pytest.approx(0.721) and loaded["cur_itrs"] == 30000
    assert list(load_state_dict_file(path)) == ["a"]


def test_sha256_of_a_file(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"edgedepth" * 100_000)
    assert sha256_file(path) == hashlib.sha256(b"edgedepth" * 100_000).hexdigest()


def test_importing_the_module_does_not_import_torch():
    """The label driver hashes checkpoints with ``sha256_file`` without paying for torch."""
    code = "import edgedepth.common.checkpoints, sys; assert 'torch' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_a_torchscript_archive_is_refused_without_torchs_unsafe_advice(tmp_path):
    path = tmp_path / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's own warning about the archive is not shown either
        with pytest.raises(ValueError) as info:
            safe_load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: refused to load: a TorchScript archive is not a checkpoint")
    assert "state_dict" in message and "weights_only" not in message and "\n" not in message


def test_keys_that_are_not_names_are_not_a_state_dict(tmp_path):
    path = tmp_path / "ints.pt"
    torch.save({0: torch.zeros(1)}, path)
    with pytest.raises(
        ValueError, match=r"ints\.pt: does not hold a state dict \(its keys are not all names\)"
    ):
        load_state_dict_file(path)
