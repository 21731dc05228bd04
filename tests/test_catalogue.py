"""docs/errors.md: every row of the catalogue names at least one test, and every test it names exists."""

import re

from conftest import REPO


def test_every_catalogue_row_names_tests_that_exist():
    text = (REPO / "docs" / "errors.md").read_text()
    handled = text.split("## Handled, each row a test")[1].split("## Not yet handled")[0]
    rows = [line for line in handled.splitlines() if re.match(r"\| \d+[a-z]? \|", line)]
    assert len(rows) >= 25
    for row in rows:
        refs = re.findall(r"`(?:tests/)?(test_\w+\.py)?::(\w+)", row)
        assert refs, f"a row without a test: {row[:80]}"
        current = None
        for file, name in refs:  # `file.py::test`, and `::test` for another test of the same file
            current = file or current
            source = (REPO / "tests" / current).read_text()
            assert re.search(rf"^def {name}\(", source, re.M), f"{current}::{name} (docs/errors.md) does not exist"
