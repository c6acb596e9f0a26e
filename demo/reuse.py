"""Reuse of the demo's finished steps: a rerun with nothing changed redoes nothing.

Each finished step leaves ``OUT/.steps/<key>.json``: its fingerprint, the settings it ran with, the
Step the report shows and a random ``id`` naming this making of its outputs. The fingerprint hashes
the step's own settings and the ``id`` of every step it reads from, so a changed setting (``--quick``
after a full run, other data, another checkpoint) invalidates that step and, through the new ``id``,
every step downstream of it; a step redone with the same settings also gets a new ``id``, so nothing
downstream is kept from older outputs. A stamp is removed before its step runs and written only when
the step succeeded: an interrupted step is redone. What is reused must still be on disk (the step's
outputs and figures), else the step is redone.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

from edgedepth.common import write_text_atomic
from edgedepth.demo.result import Figure, Step

STAMPS = ".steps"


def digest(value: object) -> str:
    """A short SHA-256 of ``value`` as canonical JSON."""
    body = json.dumps(value, sort_keys=True, default=str).encode()
    return hashlib.sha256(body).hexdigest()[:20]


def file_digest(path: Path | None) -> str | None:
    """SHA-256 of a small file's bytes (split files, the demo's own data maker); None for None."""
    return None if path is None else hashlib.sha256(Path(path).read_bytes()).hexdigest()[:20]


def file_stat(path: Path | None) -> list | None:
    """A large file's identity without reading it (checkpoints): resolved path, size, mtime."""
    if path is None:
        return None
    st = Path(path).stat()
    return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]


def tree_stat(root: Path, skip: Path | None = None) -> str:
    """A digest of every file's relative path, size and mtime under ``root`` (the user's data tree),
    leaving out the folder ``skip`` (the demo's own output, should it lie inside the tree)."""
    entries = []
    skipped = None if skip is None else Path(skip).resolve()
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if skipped is None or Path(folder, d).resolve() != skipped)
        for name in sorted(files):
            path = Path(folder, name)
            st = path.stat()
            entries.append((str(path.relative_to(root)), st.st_size, st.st_mtime_ns))
    return digest(entries)


class StepStamps:
    """The stamps under ``OUT/.steps``; ``fresh`` ignores (and replaces) every one of them."""

    def __init__(self, out: Path, fresh: bool = False) -> None:
        self.dir = Path(out) / STAMPS
        self.fresh = fresh
        self.ids: dict[str, str] = {}  # key -> id of the outputs this run uses
        self.fingerprints: dict[str, tuple[str, dict]] = {}

    def _path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def fingerprint(self, key: str, settings: dict, after: Sequence[str]) -> str:
        """Record (and return) step ``key``'s fingerprint: its settings and its inputs' ids."""
        missing = [a for a in after if a not in self.ids]
        if missing:
            raise RuntimeError(f"demo step {key} fingerprinted before {', '.join(missing)}")
        fp = digest({"key": key, "settings": settings, "after": {a: self.ids[a] for a in after}})
        self.fingerprints[key] = (fp, settings)
        return fp

    def reusable(self, key: str, out: Path, outputs: Iterable[Path] = ()) -> dict | None:
        """The stamp of ``key`` when it matches its fingerprint and its outputs and figures exist;
        else None, with the stamp removed (the step is about to be redone)."""
        fp, _ = self.fingerprints[key]
        stamp = None if self.fresh else _read(self._path(key))
        if stamp is not None and stamp.get("fingerprint") == fp:
            figures = [out / f["path"] for f in stamp["step"].get("figures", [])]
            if all(Path(p).exists() for p in [*outputs, *figures]):
                self.ids[key] = stamp["id"]
                return stamp
        self._path(key).unlink(missing_ok=True)
        return None

    def save(self, step: Step, state: dict | None = None) -> None:
        """Stamp a finished step with a new id (downstream fingerprints change with it)."""
        fp, settings = self.fingerprints[step.key]
        self.ids[step.key] = uuid.uuid4().hex[:16]
        stamp = {"fingerprint": fp, "id": self.ids[step.key], "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                 "settings": settings, "state": state or {}, "step": asdict(step)}  # fmt: skip
        self.dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self._path(step.key), json.dumps(stamp, indent=1, default=str) + "\n")


def step_from_stamp(stamp: dict) -> Step:
    """The Step a stamp recorded, marked reused; its seconds are this run's (none)."""
    data = dict(stamp["step"])
    data["figures"] = [Figure(**f) for f in data.get("figures", [])]
    return Step(**{**data, "status": "reused", "seconds": 0.0})


def _read(path: Path) -> dict | None:
    try:
        stamp = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) and {"fingerprint", "id", "step"} <= stamp.keys() else None


__all__ = ["STAMPS", "StepStamps", "digest", "file_digest", "file_stat", "step_from_stamp", "tree_stat"]
