"""Every bad input of the catalogue (``cases.py``): the exit status, one line naming the file and
the problem, no traceback, and nothing readable-but-wrong left behind. One test per command family."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgedepth import cli
from tests.reliability.catalogue import CASES, FAMILIES, Case

ROOT = Path(__file__).resolve().parents[2]


def run_case(case: Case, tmp: Path) -> None:
    setup = case.setup(tmp)
    result = CliRunner().invoke(cli.main, setup.argv)
    output = result.output
    assert "Traceback" not in output, output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{case.id}: {type(result.exception).__name__}: {result.exception}\n{output}")
    assert result.exit_code == case.code, (
        f"{case.id}: exit {result.exit_code}, expected {case.code}\n{output}"
    )
    lines = [line for line in output.splitlines() if line.strip()]
    if case.code in (2, 4):
        errors = [line for line in lines if line.startswith("Error:")]
        assert len(errors) == 1, f"{case.id}: {output}"
        assert lines[-1] == errors[0], f"{case.id}: the error is not the last line\n{output}"
        line = errors[0]
    else:  # the summary / report / warning line that carries the reason
        matching = [line for line in lines if case.pattern in line]
        assert matching, f"{case.id}: no line with {case.pattern!r}\n{output}"
        line = matching[0]
    assert case.pattern in line, f"{case.id}: {line!r} lacks {case.pattern!r}"
    assert setup.names in line, f"{case.id}: {line!r} does not name {setup.names!r}"
    if setup.written_ok is not None:
        setup.written_ok(tmp)


def _family(name: str) -> list:
    return [pytest.param(case, id=case.name) for case in CASES if case.family == name]


@pytest.mark.parametrize("case", _family("plan"))
def test_plan(case, tmp_path):
    run_case(case, tmp_path)


@pytest.mark.parametrize("case", _family("run"))
def test_run(case, tmp_path):
    run_case(case, tmp_path)


@pytest.mark.parametrize("case", _family("inspect"))
def test_inspect(case, tmp_path):
    run_case(case, tmp_path)


@pytest.mark.parametrize("case", _family("calib"))
def test_calib(case, tmp_path):
    run_case(case, tmp_path)


@pytest.mark.parametrize("case", _family("student"))
def test_student(case, tmp_path):
    run_case(case, tmp_path)


def test_the_catalogue_is_large_and_documented():
    assert len(CASES) >= 40 and {c.family for c in CASES} == set(FAMILIES)
    assert len({c.id for c in CASES}) == len(CASES)
    page = (ROOT / "docs" / "reliability.md").read_text()
    listed = set(re.findall(r"^\| `([a-z]+/[a-z0-9-]+)` \|", page, flags=re.M))
    assert listed == {c.id for c in CASES}, sorted(listed ^ {c.id for c in CASES})
    assert f"{len(CASES)} cases" in page
