"""Print the bad-input catalogue (count per family) at the end of a run that used it."""

from __future__ import annotations


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    reports = [r for group in terminalreporter.stats.values() for r in group if hasattr(r, "nodeid")]
    if not any(r.nodeid.startswith("tests/reliability/test_catalogue") for r in reports):
        return
    from tests.reliability.catalogue import CASES, FAMILIES

    counts = ", ".join(f"{family} {sum(c.family == family for c in CASES)}" for family in FAMILIES)
    terminalreporter.write_sep(
        "-", f"bad-input catalogue: {len(CASES)} cases ({counts}); docs/reliability.md"
    )
