"""The common floor: what every wing stands on. It imports no wing.

Atomic writes (``atomic``), safe checkpoint loading (``checkpoints``), error lines (``errors``),
devices (``devices``), the run lock (``lock``), live processes (``processes``), allocator
settings (``memory``), ImageNet normalisation (``normalisation``), the shared validators
(``checks``), the option types and decorators every wing's commands share (``cli_options``) and
these lazy faces (``faces``).

Each public name maps to its home module and is imported on first use (``edgedepth.common.faces``).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from edgedepth.common.faces import lazy_face

try:
    __version__ = version("edgedepth")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_HOMES = {
    "ARCH_NAMES": "edgedepth.common.cli_options",
    "FiniteFloatRange": "edgedepth.common.cli_options",
    "IMAGENET_MEAN": "edgedepth.common.normalisation",
    "IMAGENET_STD": "edgedepth.common.normalisation",
    "InputError": "edgedepth.common.cli_options",
    "METRES": "edgedepth.common.cli_options",
    "NON_NEGATIVE": "edgedepth.common.cli_options",
    "POSITIVE": "edgedepth.common.cli_options",
    "POSITIVE_METRES": "edgedepth.common.cli_options",
    "SHARE": "edgedepth.common.cli_options",
    "STALE_TMP_S": "edgedepth.common.processes",
    "SystemFault": "edgedepth.common.cli_options",
    "TMP_MARK": "edgedepth.common.processes",
    "Unavailable": "edgedepth.common.cli_options",
    "UpperChoice": "edgedepth.common.cli_options",
    "VARIANT_NAMES": "edgedepth.common.cli_options",
    "atomic_writer": "edgedepth.common.atomic",
    "check_choice": "edgedepth.common.checks",
    "check_choices": "edgedepth.common.checks",
    "check_integer": "edgedepth.common.checks",
    "check_numbers": "edgedepth.common.checks",
    "check_writable": "edgedepth.common.atomic",
    "clip": "edgedepth.common.checks",
    "cluster_options": "edgedepth.common.cli_options",
    "describe": "edgedepth.common.errors",
    "first_line": "edgedepth.common.errors",
    "folder_lock": "edgedepth.common.lock",
    "friendly_errors": "edgedepth.common.cli_options",
    "is_finite": "edgedepth.common.checks",
    "is_number": "edgedepth.common.checks",
    "is_os_fault": "edgedepth.common.errors",
    "keep_freed_memory": "edgedepth.common.memory",
    "lazy_face": "edgedepth.common.faces",
    "load_state_dict_file": "edgedepth.common.checkpoints",
    "one_size": "edgedepth.common.cli_options",
    "parse_size": "edgedepth.common.cli_options",
    "pid_alive": "edgedepth.common.processes",
    "remove_dead_temps": "edgedepth.common.processes",
    "remove_stale_temps": "edgedepth.common.atomic",
    "resolve_device": "edgedepth.common.devices",
    "safe_load": "edgedepth.common.checkpoints",
    "save_figure": "edgedepth.common.atomic",
    "sha256_file": "edgedepth.common.checkpoints",
    "state_dict_from": "edgedepth.common.checkpoints",
    "temp_suffix": "edgedepth.common.processes",
    "write_bytes_atomic": "edgedepth.common.atomic",
    "write_text_atomic": "edgedepth.common.atomic",
    "writer_alive": "edgedepth.common.processes",
}

__all__ = ["__version__", *sorted(_HOMES)]
__getattr__, __dir__ = lazy_face(__name__, _HOMES)
