"""The quick-start notebook runs end to end, with no error and no warning
printed to a cell."""

import pathlib
import re
import shutil

import pytest

pytestmark = pytest.mark.integration

NOTEBOOK = (
    pathlib.Path(__file__).resolve().parents[2]
    / "examples"
    / "quickstart.ipynb"
)
# TensorFlow's C++ start-up log lines (device probing, CPU features): any
# notebook that imports TensorFlow shows them; nothing of ours.
NATIVE_LOG = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r" are written to STDERR"
    r"|[IWE]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ \w+\.cc:\d+\] .*"
    r"|To enable the following instructions: .* compiler flags\.)$"
)


def test_notebook_is_stored_without_outputs():
    import nbformat

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_quickstart_notebook_runs_without_errors_or_warnings(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)
    notebook = nbformat.read(tmp_path / NOTEBOOK.name, as_version=4)
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    printed = []
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            assert output.output_type != "error", (index, output)
            if output.output_type != "stream":
                continue
            for line in output.text.splitlines():
                if output.name == "stderr" and not NATIVE_LOG.match(line):
                    raise AssertionError(f"cell {index} printed: {line}")
                assert "warning" not in line.lower(), (index, line)
                printed.append(line)
    text = "\n".join(printed)
    assert "distilled student test accuracy" in text
    assert re.search(r"int8 accuracy 0\.\d+", text)
    assert (tmp_path / "quickstart" / "best.keras").exists()
    assert (tmp_path / "quickstart" / "student_int8.tflite").exists()
    assert any((tmp_path / "quickstart" / "logs").rglob("events.out.*"))
