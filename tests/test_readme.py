"""The README's code runs as written, and its commands are the real ones.

Its ```python blocks run like those of docs/ (see test_docs.py): in
order, in one namespace, in an empty working directory.
"""

import pathlib
import re

from test_docs import python_blocks
from test_docs import run_blocks

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
DEMO = 'pip install -e ".[app]" && keras-distill demo'
TESTS = 'pip install -e ".[dev]" && python -m pytest -q'


def _section(heading):
    text = README.read_text()
    return text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]


def test_quick_start_runs(tmp_path, monkeypatch, capsys):
    quick_start = re.search(
        r"```python\n(.*?)```", _section("## Quick start"), re.S
    ).group(1)
    assert quick_start in [block.code for block in python_blocks(README)]
    monkeypatch.chdir(tmp_path)
    run_blocks(README)
    assert (tmp_path / "student.keras").exists()
    out = capsys.readouterr().out
    assert "distillation_loss" in out


def test_set_up_has_the_two_commands():
    commands = re.search(r"```bash\n(.*?)```", _section("## Set-up"), re.S)
    lines = commands.group(1).splitlines()
    venv = "python3 -m venv .venv && . .venv/bin/activate && "
    assert venv + DEMO in lines
    assert venv + TESTS in lines


def test_test_command_is_the_ci_command():
    ci = (README.parent / ".ci" / "run").read_text()
    command = "python -m pytest -q"
    assert command in README.read_text()
    assert ci.strip().splitlines()[-1] == command


def test_readme_stays_short():
    assert len(README.read_text().splitlines()) < 250
