"""The text data and task modules keep to the size of a readable file (STYLE.md: about 300
lines at most, one concept per file)."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "dbparallel"
LIMIT = 300  # lines
TEXT_MODULES = ("data/text*.py", "data/corpus*.py", "data/token*.py", "tasks/masked_lm.py",
                "tasks/autoregressive.py", "tasks/text.py", "cli_network.py")


def test_text_modules_stay_within_the_size_limit() -> None:
    files = sorted({f for pattern in TEXT_MODULES for f in PACKAGE.glob(pattern)})
    assert len(files) >= 9, files
    sizes = {str(f.relative_to(PACKAGE)): len(f.read_text().splitlines()) for f in files}
    assert {name: n for name, n in sizes.items() if n > LIMIT} == {}
