"""The library needs TensorFlow, Keras and NumPy only: a missing optional
dependency gives one line naming the extra that installs it."""

import sys

import pytest

from keras_distill import export
from keras_distill.app import config
from keras_distill.app import datasets as data
from keras_distill.app import report


def _missing(monkeypatch, *modules):
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def test_optional_import_names_the_extra(monkeypatch):
    from keras_distill._utils import optional_import

    _missing(monkeypatch, "yaml")
    with pytest.raises(ImportError) as info:
        optional_import("yaml", "app", "A YAML config file")
    assert str(info.value) == (
        "A YAML config file needs `yaml`, an optional dependency: "
        "pip install 'keras-distill[app]'"
    )
    assert info.value.__cause__ is None


@pytest.mark.parametrize(
    "call, modules, extra",
    [
        (
            lambda tmp: export.Runner(tmp / "m.tflite"),
            ("ai_edge_litert", "ai_edge_litert.interpreter"),
            "export",
        ),
        (lambda tmp: data._digits(), ("sklearn", "sklearn.datasets"), "app"),
        (
            lambda tmp: data._tfds("mnist", None),
            ("tensorflow_datasets",),
            "app",
        ),
        (lambda tmp: report._pyplot(), ("matplotlib",), "app"),
        (
            lambda tmp: config.read_config_file(str(tmp / "c.yaml")),
            ("yaml",),
            "app",
        ),
    ],
)
def test_each_optional_dependency(call, modules, extra, tmp_path, monkeypatch):
    (tmp_path / "c.yaml").write_text("epochs: 1\n")
    _missing(monkeypatch, *modules)
    with pytest.raises(ImportError, match=rf"keras-distill\[{extra}\]'$"):
        call(tmp_path)
