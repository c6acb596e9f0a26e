"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md lost its Python example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})  # the project's own documentation, not user input
    printed = capsys.readouterr().out
    assert "'depth/4'" in printed and "abs_rel" in printed
