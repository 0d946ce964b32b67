"""The built distributions hold what the package needs, and say it right.

Run by `.ci/wheel` on the folder `python -m build` wrote: one wheel and one
sdist. The wheel must hold every file of the package folder (modules and
any data file: a folder the package finder skips, or data not declared
as package data, would be missing), nothing outside the package and its
metadata, the license text, and metadata that match pyproject.toml: name,
version (from `keras_distill.__version__`), license expression, Python
and dependency requirements, extras, valid classifiers, the command, the
README and the changelog as the long description, and no project URL
where there is none. The sdist must hold the package, LICENSE and
CHANGELOG.md. Prints each file's size and file count.

Usage: python .ci/check_dist.py DIST_FOLDER
"""

import ast
import email.parser
import pathlib
import sys
import tarfile
import zipfile

import tomllib
import trove_classifiers
from packaging.requirements import Requirement

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "keras_distill"
problems = []


def check(condition, message):
    if not condition:
        problems.append(message)


def source_version():
    tree = ast.parse((ROOT / PACKAGE / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == "__version__" for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise SystemExit("no __version__ in keras_distill/__init__.py")


def package_files():
    """Every file of the package folder, as the wheel names it."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / PACKAGE).rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and path.suffix not in (".pyc", ".pyo")
    }


def check_metadata(metadata, project, version, where):
    check(metadata["Name"] == project["name"], f"{where}: Name")
    check(metadata["Version"] == version, f"{where}: Version")
    check(metadata["Summary"] == project["description"], f"{where}: Summary")
    check(
        metadata["License-Expression"] == project["license"],
        f"{where}: License-Expression {metadata['License-Expression']}",
    )
    check(
        metadata.get_all("License-File") == project["license-files"],
        f"{where}: License-File {metadata.get_all('License-File')}",
    )
    check(
        metadata["Requires-Python"] == project["requires-python"],
        f"{where}: Requires-Python",
    )
    expected = {str(Requirement(r)) for r in project["dependencies"]}
    for extra, requirements in project["optional-dependencies"].items():
        expected |= {
            str(Requirement(f'{r}; extra == "{extra}"')) for r in requirements
        }
    found = {
        str(Requirement(r)) for r in metadata.get_all("Requires-Dist") or ()
    }
    check(found == expected, f"{where}: Requires-Dist {found ^ expected}")
    check(
        set(metadata.get_all("Provides-Extra") or ())
        == set(project["optional-dependencies"]),
        f"{where}: Provides-Extra",
    )
    classifiers = metadata.get_all("Classifier") or []
    check(classifiers == project["classifiers"], f"{where}: Classifier")
    invalid = [
        c
        for c in classifiers
        if c not in trove_classifiers.classifiers
        or c in trove_classifiers.deprecated_classifiers
    ]
    check(not invalid, f"{where}: unknown classifiers {invalid}")
    for field in ("Project-URL", "Home-page", "Download-URL"):
        check(
            metadata[field] is None,
            f"{where}: {field} without an address to give",
        )
    check(
        metadata["Description-Content-Type"] == "text/markdown",
        f"{where}: Description-Content-Type",
    )
    description = metadata.get_payload()
    for name in ("README.md", "CHANGELOG.md"):
        first = (ROOT / name).read_text().strip().splitlines()[0]
        check(first in description, f"{where}: {name} not in the description")


def check_wheel(path, project, version):
    with zipfile.ZipFile(path) as wheel:
        names = set(wheel.namelist())
        info = f"{PACKAGE}-{version}.dist-info"
        metadata = email.parser.Parser().parsestr(
            wheel.read(f"{info}/METADATA").decode()
        )
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
        license_text = wheel.read(f"{info}/licenses/LICENSE")
    in_package = {n for n in names if n.startswith(f"{PACKAGE}/")}
    missing = sorted(package_files() - in_package)
    check(not missing, f"the wheel lacks package files: {missing}")
    outside = sorted(
        n for n in names if not n.startswith((f"{PACKAGE}/", f"{info}/"))
    )
    check(not outside, f"the wheel holds files outside the package: {outside}")
    check(
        license_text == (ROOT / "LICENSE").read_bytes(),
        "the wheel's LICENSE differs from LICENSE",
    )
    scripts = project["scripts"]
    for name, target in scripts.items():
        check(
            f"{name} = {target}" in entry_points,
            f"the wheel does not install the command {name}",
        )
    check_metadata(metadata, project, version, "wheel METADATA")
    return len(names)


def check_sdist(path, project, version):
    top = f"{PACKAGE}-{version}"
    with tarfile.open(path) as sdist:
        members = [m for m in sdist.getmembers() if m.isfile()]
        names = {m.name.removeprefix(f"{top}/") for m in members}
        pkg_info = sdist.extractfile(f"{top}/PKG-INFO").read().decode()
        license_text = sdist.extractfile(f"{top}/LICENSE").read()
    needed = package_files() | {
        "LICENSE",
        "CHANGELOG.md",
        "README.md",
        "pyproject.toml",
        "setup.cfg",
    }
    missing = sorted(needed - names)
    check(not missing, f"the sdist lacks: {missing}")
    check(
        license_text == (ROOT / "LICENSE").read_bytes(),
        "the sdist's LICENSE differs from LICENSE",
    )
    check_metadata(
        email.parser.Parser().parsestr(pkg_info), project, version, "PKG-INFO"
    )
    return len(members)


def main(folder):
    folder = pathlib.Path(folder)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    version = source_version()
    wheels = sorted(folder.glob("*.whl"))
    sdists = sorted(folder.glob("*.tar.gz"))
    expected_wheel = f"{PACKAGE}-{version}-py3-none-any.whl"
    expected_sdist = f"{PACKAGE}-{version}.tar.gz"
    if [w.name for w in wheels] != [expected_wheel] or [
        s.name for s in sdists
    ] != [expected_sdist]:
        raise SystemExit(
            f"expected {expected_wheel} and {expected_sdist} in {folder}, "
            f"found {[p.name for p in wheels + sdists]}"
        )
    counts = {
        wheels[0]: check_wheel(wheels[0], project, version),
        sdists[0]: check_sdist(sdists[0], project, version),
    }
    for path, count in counts.items():
        print(f"{path.name}: {path.stat().st_size:,} bytes, {count} files")
    if problems:
        print("\n".join(["Distribution problems:", *problems]))
        raise SystemExit(1)
    print("wheel and sdist: contents and metadata OK")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
