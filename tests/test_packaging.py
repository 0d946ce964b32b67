"""What the built distributions ship, checked from the source tree.

Fast and offline: no build here (`.ci/wheel` builds the sdist and the
wheel, checks them with `.ci/check_dist.py` and installs the wheel outside
the clone). These tests keep the source tree such that the build can
only ship what the package needs: every subpackage found, every data file
declared, one version, the license and the changelog.
"""

import ast
import importlib.metadata
import pathlib
import re

import pytest

import keras_distill

tomllib = pytest.importorskip("tomllib")

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "keras_distill"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
CHANGELOG = ROOT / "CHANGELOG.md"
RELEASE = re.compile(
    r"^## \[(\d+\.\d+\.\d+)\] - (Unreleased|\d{4}-\d{2}-\d{2})$", re.M
)

# Modules that read a file beside their own code at run time, with the
# files (relative to the package) they read: each must be package data.
READS_PACKAGE_FILES = {}


def _package_files():
    return [
        path
        for path in PACKAGE.rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and path.suffix not in (".pyc", ".pyo")
    ]


def _declared_data():
    """Every file [tool.setuptools.package-data] declares: its keys are
    packages (or "*", every package), its values glob patterns relative to
    the package's folder, as setuptools reads them."""
    declared = set()
    for package, patterns in SETUPTOOLS.get("package-data", {}).items():
        if package == "*":
            folders = {p.parent for p in PACKAGE.rglob("__init__.py")}
        else:
            folders = {ROOT.joinpath(*package.split("."))}
        for folder in folders:
            for pattern in patterns:
                declared.update(folder.glob(pattern))
    return declared


def test_the_build_finds_every_folder_of_modules():
    # The packages setuptools ships, found as pyproject.toml's
    # [tool.setuptools.packages.find] says (namespace packages unless
    # `namespaces = false`): every folder with a module must be one.
    setuptools = pytest.importorskip("setuptools")
    find = SETUPTOOLS["packages"]["find"]
    finder = (
        setuptools.find_namespace_packages
        if find.get("namespaces", True)
        else setuptools.find_packages
    )
    found = set(
        finder(
            where=str(ROOT),
            include=find.get("include", ("*",)),
            exclude=find.get("exclude", ()),
        )
    )
    folders = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in PACKAGE.rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert sorted(folders - found) == [], "folders the wheel would leave out"


def test_every_data_file_in_the_package_is_declared_package_data():
    declared = _declared_data()
    undeclared = sorted(
        str(p.relative_to(ROOT))
        for p in _package_files()
        if p.suffix != ".py" and p not in declared
    )
    assert undeclared == [], (
        "files the wheel would leave out; declare them in pyproject.toml's "
        f"[tool.setuptools.package-data]: {undeclared}"
    )


def _reads_beside_itself(tree):
    """Whether a module locates files from its own place (`__file__`,
    `importlib.resources`, `pkgutil.get_data`)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "__file__":
            return True
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names]
            module = getattr(node, "module", None) or ""
            if any(n.startswith("importlib.resources") for n in names) or (
                module.startswith("importlib") and "resources" in names
            ):
                return True
            if module.startswith("importlib.resources"):
                return True
        if isinstance(node, ast.Attribute) and (
            node.attr,
            getattr(node.value, "id", None),
        ) in {("get_data", "pkgutil"), ("resources", "importlib")}:
            return True
    return False


def test_files_read_beside_the_code_are_known_and_shipped():
    readers = {
        str(path.relative_to(ROOT))
        for path in PACKAGE.rglob("*.py")
        if _reads_beside_itself(ast.parse(path.read_text()))
    }
    assert readers == set(READS_PACKAGE_FILES), (
        "a module reads files beside its code: list them in "
        "READS_PACKAGE_FILES and declare them as package data"
    )
    declared = _declared_data()
    for files in READS_PACKAGE_FILES.values():
        for name in files:
            assert PACKAGE / name in declared, name


def test_the_version_has_one_home():
    assert "version" in PYPROJECT["project"]["dynamic"]
    assert "version" not in PYPROJECT["project"]
    assert SETUPTOOLS["dynamic"]["version"] == {
        "attr": "keras_distill.__version__"
    }
    assert re.fullmatch(
        r"\d+\.\d+\.\d+(\.dev\d+|rc\d+)?", keras_distill.__version__
    )
    # The installed metadata (an editable install's too) says the same.
    assert importlib.metadata.version("keras-distill") == (
        keras_distill.__version__
    )


def test_license_is_the_apache_text_and_ships_in_both_distributions():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    # A license expression excludes the older License classifiers.
    assert not [c for c in project["classifiers"] if c.startswith("License")]
    manifest = (ROOT / "MANIFEST.in").read_text().splitlines()
    assert "include LICENSE" in manifest


def test_changelog_ships_and_names_this_version():
    # The sdist takes it through MANIFEST.in, the wheel as the end of the
    # long description (README.md, then CHANGELOG.md).
    assert "include CHANGELOG.md" in (ROOT / "MANIFEST.in").read_text()
    assert "readme" in PYPROJECT["project"]["dynamic"]
    readme = SETUPTOOLS["dynamic"]["readme"]
    assert readme["file"] == ["README.md", "CHANGELOG.md"]
    assert readme["content-type"] == "text/markdown"
    text = CHANGELOG.read_text()
    assert text.startswith("# Changelog\n")
    releases = RELEASE.findall(text)
    versions = [tuple(map(int, v.split("."))) for v, _ in releases]
    assert versions, "no release heading"
    assert versions == sorted(set(versions), reverse=True)
    # Only the newest entry may be unreleased; the others have a date.
    assert all(date != "Unreleased" for _, date in releases[1:])
    release = re.match(r"\d+\.\d+\.\d+", keras_distill.__version__).group(0)
    assert release in [v for v, _ in releases]
    kinds = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
    assert set(re.findall(r"^### (.+)$", text, re.M)) <= kinds


def test_classifiers_and_extras_say_what_is_tested_and_documented():
    project = PYPROJECT["project"]
    pythons = [
        c.rsplit(" :: ", 1)[1]
        for c in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    assert pythons, "no Python version classifier"
    lowest = project["requires-python"].removeprefix(">=")
    as_tuple = lambda v: tuple(map(int, v.split(".")))  # noqa: E731
    assert all(as_tuple(v) >= as_tuple(lowest) for v in pythons)
    # No address where the project has none.
    assert "urls" not in project
    readme = (ROOT / "README.md").read_text()
    for extra in project["optional-dependencies"]:
        assert f"`{extra}`" in readme, f"README does not document {extra}"
