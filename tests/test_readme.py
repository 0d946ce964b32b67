"""The README's quick start runs as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _block_after(heading):
    text = README.read_text()
    section = text.split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_quick_start_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(_block_after("## Quick start"), "README", "exec"), {})
    assert (tmp_path / "student.keras").exists()
    out = capsys.readouterr().out
    assert "distillation_loss" in out


def test_test_command_is_the_ci_command():
    ci = (README.parent / ".ci" / "run").read_text()
    command = "python -m pytest -q"
    assert command in README.read_text()
    assert ci.strip().splitlines()[-1] == command


def test_models_you_bring_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(_block_after("## Models you bring"), "README", "exec"), {})
