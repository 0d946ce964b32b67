"""The pages of docs/ run as written, and their links lead somewhere.

Every ```python block of a page runs, in the page's order, in one
namespace (as a reader pasting them into one session would) and in an
empty working directory. A block right after a line
`<!-- skip: reason -->` is not run: a long training, or the network.
Tracebacks point at the page's own line numbers.
"""

import dataclasses
import pathlib
import re
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
SKIP = re.compile(r"<!-- skip: (\S.*?) -->")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCED = re.compile(r"^ *```.*?^ *```[ \t]*$", re.S | re.M)
# Names that moved into keras_distill.app or keras_distill.pipelines, and
# the benchmark labels that were renamed; the docs use the new ones.
OLD_NAMES = re.compile(
    r"keras_distill\.(data|zoo|run|report|robustness|cli|bench)\b"
    r"|--variants ours|\bours_shift\b|\b[a-i]/[a-i]\b"
)


@dataclasses.dataclass
class Block:
    path: pathlib.Path
    line: int  # the block's first line of code, counted from 1
    code: str
    skip: str = None  # the reason, for a block that is not run


def python_blocks(path):
    """The ```python blocks of a Markdown file, in order."""
    lines = path.read_text().splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            end = i + 1
            while lines[end].strip() != "```":
                end += 1
            reason = SKIP.fullmatch(lines[i - 1].strip()) if i else None
            code = textwrap.dedent("\n".join(lines[i + 1 : end])) + "\n"
            blocks.append(Block(path, i + 2, code, reason and reason[1]))
            i = end
        i += 1
    return blocks


def run_blocks(path, namespace=None):
    """Runs the blocks of `path` that are not skipped; returns the
    namespace they shared."""
    namespace = {"__name__": "__docs__"} if namespace is None else namespace
    for block in python_blocks(path):
        if block.skip is None:
            padded = "\n" * (block.line - 1) + block.code
            exec(compile(padded, str(block.path), "exec"), namespace)
    return namespace


def slug(heading):
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path):
    """The anchors of the headings of a Markdown file."""
    prose = FENCED.sub("", path.read_text())
    seen = {}
    for heading in re.findall(r"^#+ (.+)$", prose, re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        yield base if count == 0 else f"{base}-{count}"


def test_there_are_pages():
    assert len(PAGES) >= 5


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_blocks(page)


def test_skip_marks_give_a_reason_and_precede_a_block():
    wrong = []
    for path in [README, *PAGES]:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip().startswith("<!-- skip") and not (
                SKIP.fullmatch(line.strip())
                and lines[i + 1].strip() == "```python"
            ):
                wrong.append(f"{path.name}:{i + 1}")
    assert wrong == []


def test_every_page_is_linked_from_the_readme():
    linked = {
        (README.parent / target.split("#")[0]).resolve()
        for target in LINK.findall(FENCED.sub("", README.read_text()))
    }
    assert [p.name for p in PAGES if p.resolve() not in linked] == []


def test_links_lead_somewhere():
    broken = []
    for path in [README, *PAGES]:
        for target in LINK.findall(FENCED.sub("", path.read_text())):
            if re.match(r"[a-z]+:", target):
                continue  # an address outside the repository
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            if not linked.exists() or (
                anchor and anchor not in set(anchors(linked))
            ):
                broken.append(f"{path.name}: {target}")
    assert broken == []


def test_new_names_only():
    found = [
        f"{path.name}: {match.group(0)}"
        for path in [README, *PAGES]
        for match in OLD_NAMES.finditer(path.read_text())
    ]
    assert found == []
