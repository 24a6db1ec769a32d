"""The repository stands alone: no tracked file sends a reader to an issue tracker it does not carry or to a
file outside the checkout, and every link into docs/reference.md lands on a heading (docs/development.md,
"Tests")."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Files another branch is rewriting as these rules arrive; the lead empties this list once that branch is
# merged, and from then on every tracked file is checked.
NOT_YET_CHECKED: tuple[str, ...] = ()
ISSUE_NUMBER = re.compile(r"\bissues?[ -]?#?\d+", re.IGNORECASE)  # "issue", then a number
# The examples in test_the_patterns_catch_what_they_are_for are split with +, so this file passes its own scan.
OUTSIDE = [
    re.compile(r"\.\./shared"),  # the folder beside the checkout that a clone does not have
    re.compile(r"\bshared/(data|docs|README)"),
    re.compile(r"\b(REFERENCE|ARCHITECTURE)\.md"),  # the notes that became docs/reference.md
]
REFERENCE_LINK = re.compile(r"reference\.md#([a-z0-9-]+)")


def tracked_text() -> dict[str, str]:
    """Every git-tracked file that decodes as UTF-8 text, by repository path."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    found = {}
    for name in names.decode().split("\0"):
        path = REPO / name
        if not name or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            found[name] = data.decode()
        except UnicodeDecodeError:
            continue
    return found


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    return tracked_text()


def offending(text: str, patterns: list[re.Pattern[str]]) -> list[str]:
    return [
        f"{number}: {line.strip()[:120]}"
        for number, line in enumerate(text.splitlines(), 1)
        if any(p.search(line) for p in patterns)
    ]


def test_the_scan_sees_code_docs_presets_and_itself(files):
    assert "pyproject.toml" in files
    assert "tests/test_self_contained.py" in files
    assert any(name.startswith("presets/") for name in files)
    assert any(name.startswith("benchmarks/") for name in files)
    assert "docs/figures" not in {name.rsplit("/", 1)[0] for name in files if name.endswith(".png")}  # binary


def test_no_tracked_file_refers_to_an_issue_number(files):
    found = {name: offending(text, [ISSUE_NUMBER]) for name, text in files.items() if name not in NOT_YET_CHECKED}
    assert {name: lines for name, lines in found.items() if lines} == {}


def test_no_tracked_file_refers_to_a_file_outside_the_repository(files):
    found = {name: offending(text, OUTSIDE) for name, text in files.items() if name not in NOT_YET_CHECKED}
    assert {name: lines for name, lines in found.items() if lines} == {}


def test_the_patterns_catch_what_they_are_for():
    assert ISSUE_NUMBER.search("the official defaults of issue" + " 13")
    assert ISSUE_NUMBER.search('docs/results.md, "Issue' + ' 15"')
    assert ISSUE_NUMBER.search("the issue" + "-15 target")
    assert not ISSUE_NUMBER.search("https://github.com/h5py/h5py/issues/914")  # a link readers can follow
    assert not ISSUE_NUMBER.search("no issue with 3 seeds")
    assert offending("tar xzf .." + "/shared" + "/data/x.tar.gz", OUTSIDE)
    assert offending("REFERENCE" + ".md, Training recipe", OUTSIDE)
    assert not offending("shared information between views", OUTSIDE)


def github_anchor(heading: str) -> str:
    """GitHub's id for a markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_into_reference_md_lands_on_a_heading(files):
    headings = [line.lstrip("#") for line in files["docs/reference.md"].splitlines() if line.startswith("#")]
    anchors = {github_anchor(h) for h in headings}
    assert github_anchor(" The report's 30-epoch numbers") == "the-reports-30-epoch-numbers"
    links = {(name, anchor) for name, text in files.items() for anchor in REFERENCE_LINK.findall(text)}
    assert len(links) >= 10  # the code, tests and docs cite it
    assert {(name, anchor) for name, anchor in links if anchor not in anchors} == set()
