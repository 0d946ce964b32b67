"""The examples run end to end (slow: `python -m pytest -m slow`)."""

import os
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def _run(command, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=900, env=env
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_distill_with_fit(tmp_path):
    out = _run(
        [
            sys.executable,
            str(EXAMPLES / "distill_with_fit.py"),
            "--epochs",
            "1",
        ],
        tmp_path,
    )
    assert "student:" in out
    assert (tmp_path / "distilled_student.keras").exists()


@pytest.mark.slow
def test_export_tflite(tmp_path):
    out = _run(
        [sys.executable, str(EXAMPLES / "export_tflite.py"), "--epochs", "1"],
        tmp_path,
    )
    assert out.count("predicted") == 5
    assert (tmp_path / "student_int8.tflite").exists()


@pytest.mark.slow
def test_own_arrays(tmp_path):
    _run(
        [sys.executable, str(EXAMPLES / "own_arrays.py"), "--epochs", "1"],
        tmp_path,
    )
    assert (tmp_path / "saved_models" / "my_digits" / "report.md").exists()


@pytest.mark.slow
def test_cli_with_config(tmp_path):
    _run(
        [
            "bash",
            str(EXAMPLES / "cli_with_config.sh"),
            "--epochs",
            "1",
            "--teacher-epochs",
            "1",
        ],
        tmp_path,
    )
    run = tmp_path / "saved_models" / "example"
    assert (run / "student_int8.tflite").exists()
    assert (run / "student_float16.tflite").exists()


@pytest.mark.slow
def test_multi_gpu(tmp_path):
    out = _run(
        [sys.executable, str(EXAMPLES / "multi_gpu.py"), "--epochs", "1"],
        tmp_path,
    )
    assert "replica(s) in sync" in out and "'accuracy'" in out


@pytest.mark.slow
def test_multi_worker(tmp_path):
    out = _run(
        [
            sys.executable,
            str(EXAMPLES / "multi_worker.py"),
            "--launch-local",
            "2",
            "--epochs",
            "1",
        ],
        tmp_path,
    )
    assert "student saved to" in out
    assert (tmp_path / "multi_worker_student.keras").exists()


@pytest.mark.slow
def test_distill_language_model(tmp_path):
    pytest.importorskip("keras_hub", reason="the example's tokenizer")
    out = _run(
        [
            sys.executable,
            str(EXAMPLES / "distill_language_model.py"),
            "--epochs",
            "1",
        ],
        tmp_path,
    )
    assert "bytes a token" in out and "generated:" in out
    assert (tmp_path / "student_lm.tflite").exists()


@pytest.mark.slow
def test_own_teacher_and_folder(tmp_path):
    _run(
        [
            sys.executable,
            str(EXAMPLES / "own_teacher_and_folder.py"),
            "--epochs",
            "1",
        ],
        tmp_path,
    )
    assert (tmp_path / "saved_models" / "my_images" / "report.md").exists()
    assert (tmp_path / "my_teacher.keras").exists()
