"""The package's layout: the library never imports the application, and
no two modules import each other, even inside functions."""

import ast
import pathlib
import re

import keras_distill

PACKAGE = pathlib.Path(keras_distill.__file__).parent
API = PACKAGE.parent / "docs" / "api.md"


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
        if not name.startswith("keras_distill.app")
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


def _documented():
    """The `keras_distill.NAME` (top-level) names docs/api.md documents."""
    text = API.read_text()
    return set(re.findall(r"`keras_distill\.([A-Za-z]\w*)", text))


def test_docs_api_documents_exactly_the_public_names():
    public = set(keras_distill.__all__) - {"__version__"}
    assert _documented() == public
    for name in public:  # each one is there
        assert getattr(keras_distill, name) is not None
    # The package's own modules are the public ones and private ones.
    modules = {
        p.stem if p.suffix else p.name
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__")
        or (p.is_dir() and (p / "__init__.py").exists())
    }
    assert {m for m in modules if not m.startswith("_")} == (
        public - {"Distiller", "NonFiniteLossError"}
    ) | {"distiller"}


def test_docs_name_no_private_module_and_every_name_resolves():
    import importlib

    docs = [API, *sorted((PACKAGE.parent / "docs").glob("*.md"))]
    docs.append(PACKAGE.parent / "README.md")
    unresolved = []
    for page in docs:
        text = page.read_text()
        assert not re.search(r"keras_distill\._[a-z]", text), page.name
        for path in set(re.findall(r"keras_distill(?:\.\w+)+", text)):
            parts = path.split(".")
            target = importlib.import_module(parts[0])
            for i, part in enumerate(parts[1:], start=1):
                if hasattr(target, part):
                    target = getattr(target, part)
                    continue
                try:
                    target = importlib.import_module(".".join(parts[: i + 1]))
                except ImportError:
                    unresolved.append(f"{page.name}: {path}")
                    break
    assert unresolved == []


def test_the_one_release_shims_are_gone():
    import importlib

    import pytest

    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("keras_distill.data")
    for old in ("zoo", "run", "report", "robustness", "bench", "checks"):
        assert not hasattr(keras_distill, old)


OPTIONAL = ("keras_hub", "ai_edge_litert", "matplotlib", "tensorflow_datasets")
OPTIONAL += ("yaml", "sklearn", "mlxtend", "tensorboard")


def test_the_library_imports_no_optional_dependency_at_import_time():
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        if name.startswith("keras_distill.app"):
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
