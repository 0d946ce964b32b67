"""The package's layout: the library never imports the application, and
no two modules import each other, even inside functions."""

import ast
import pathlib

import keras_distill

PACKAGE = pathlib.Path(keras_distill.__file__).parent
# `keras_distill.data` forwards to `keras_distill.app.datasets` for one
# release; it is the one library module that may import the application.
SHIMS = {"keras_distill.data"}


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path, package=None):
    """Every `keras_distill` module a file imports, at any depth."""
    found = set()
    if package is None:
        package = _module_name(path)
        if path.name != "__init__.py":
            package = package.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {name for name in found if name.startswith("keras_distill")}


def _graph():
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in _imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }


def test_the_library_imports_no_application_module():
    offenders = {
        name: sorted(m for m in imported if m.startswith("keras_distill.app"))
        for name, imported in _graph().items()
        if not name.startswith("keras_distill.app") and name not in SHIMS
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_import_cycles():
    graph = _graph()
    # A package's `__init__` importing its own submodules is not a cycle.
    for name in graph:
        graph[name] = {
            m for m in graph[name] if not name.startswith(m + ".")
        }
    cycles = []

    def visit(node, path, on_path, done):
        for nxt in sorted(graph[node]):
            if nxt in on_path:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in done:
                on_path.add(nxt)
                visit(nxt, path + [nxt], on_path, done)
                on_path.discard(nxt)
        done.add(node)

    done = set()
    for start in sorted(graph):
        if start not in done:
            visit(start, [start], {start}, done)
    assert cycles == []


def test_the_graph_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text(
        "def f():\n    from keras_distill.app import zoo\n    return zoo\n"
    )
    assert "keras_distill.app.zoo" in _imports(source, "keras_distill")


def test_moved_modules_still_work_for_one_release():
    import importlib
    import sys

    import pytest

    from keras_distill.app import datasets
    from keras_distill.app import zoo

    sys.modules.pop("keras_distill.data", None)
    with pytest.warns(DeprecationWarning, match="keras_distill.app.datasets"):
        old = importlib.import_module("keras_distill.data")
    assert old.load is datasets.load
    assert old.shift_augment is keras_distill.pipelines.shift_augment
    assert keras_distill.zoo is zoo
    assert keras_distill.run is importlib.import_module("keras_distill.app.run")
    # Names that left `keras_distill.app.run` for modules of their own.
    from keras_distill.app import config

    with pytest.warns(DeprecationWarning, match="keras_distill.app.config"):
        from keras_distill.app.run import RunConfig
    assert RunConfig is config.RunConfig
    with pytest.warns(DeprecationWarning, match="app.environment.versions"):
        assert callable(keras_distill.run.versions)


OPTIONAL = ("keras_hub", "ai_edge_litert", "matplotlib", "tensorflow_datasets")
OPTIONAL += ("yaml", "sklearn", "mlxtend", "tensorboard")


def test_the_library_imports_no_optional_dependency_at_import_time():
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        if name.startswith("keras_distill.app") or name in SHIMS:
            continue
        for node in ast.parse(path.read_text()).body:  # module level only
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            bad = [n for n in names if n.split(".")[0] in OPTIONAL]
            if bad:
                found[name] = bad
    assert found == {}
