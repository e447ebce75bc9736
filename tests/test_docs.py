"""The README is a manual that stands alone (issue "The operator's day", finding 11): it starts
with the two commands, reads in the order an operator meets edged, every link into the
repository resolves (files and headings), nothing points outside it, and the LICENSE is the
one pyproject.toml names."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).parent.parent
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").rglob("*.md"))


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_starts_with_the_two_commands() -> None:
    block = README.read_text().split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    assert block[0].endswith("edged start --embedded")
    assert block[1].endswith("python -m pytest -n 2")


def test_readme_reads_in_the_order_an_operator_meets_edged() -> None:
    headings = re.findall(r"^## (.+)$", README.read_text(), re.M)
    order = ["Walk-through", "Install", "Handlers", "Configuration", "Operating edged",
             "Failover runbook", "Troubleshooting", "Supported versions", "Delivery promises"]
    positions = [headings.index(h) for h in order]
    assert positions == sorted(positions), headings


def test_troubleshooting_is_a_table_of_symptoms_causes_and_commands() -> None:
    section = README.read_text().split("\n## Troubleshooting\n", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in section.splitlines() if r.startswith("| ") and "---" not in r]
    assert rows[0].startswith("| symptom | likely cause | what to run |")
    assert len(rows) - 1 >= 12 and all("edged" in r or "`" in r for r in rows[1:])


def test_every_link_into_the_repository_resolves() -> None:
    for doc in [README, *DOCS]:
        text = doc.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: outside links are not checked here
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            assert file.exists(), f"{doc.name}: link to {target} (no such file)"
            if anchor and file.suffix == ".md":
                anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", file.read_text(), re.M)}
                assert anchor in anchors, f"{doc.name}: link to {target} (no such heading)"


def test_the_repository_stands_alone() -> None:
    for doc in [README, *DOCS]:
        text = doc.read_text()
        assert "../shared" not in text and "DESIGN.md" not in text, doc
        assert not re.search(r"/work/|/home/\w+/", text), doc


def test_the_license_is_the_one_pyproject_names() -> None:
    license_name = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]
    assert license_name == "Apache-2.0"
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_every_delivery_promise_names_tests_that_exist() -> None:
    """README's delivery promises each name their guarding tests; a renamed or deleted test
    must not leave a promise pointing at nothing."""
    section = README.read_text().split("\n## Delivery promises\n", 1)[1].split("\n## ", 1)[0]
    promises = re.split(r"\n- ", section)[1:]
    assert len(promises) >= 9
    for promise in promises:
        refs = re.findall(r"`(test_\w+\.py)(?:::(test_\w+))?`", promise)
        assert refs, f"a delivery promise names no test: {promise[:80]!r}"
        for file_name, test_name in refs:
            test_file = REPO / "tests" / file_name
            assert test_file.exists(), f"README names {file_name}, which does not exist"
            if test_name:
                assert re.search(rf"^(async )?def {test_name}\(", test_file.read_text(), re.M), (
                    f"README names {file_name}::{test_name}, which does not exist")
