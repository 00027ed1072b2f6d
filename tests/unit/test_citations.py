"""Every document the code and the docs cite is in the repository, and so is every section.

A citation is a path ending in `.md` — `docs/DESIGN.md`, `gossip/PROTOCOL.md`, `README.md` —
optionally followed by a section, `§n` (a heading numbered n) or `, "Title"` (a heading that
starts with Title). A path that names a folder of the repository, or a bare name, must resolve
(a bare name at the top level or beside the citing file); paths under run directories
(`runs/`, `DIR/`, ...) and the reports the tools write are outputs, not citations.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("node", "gossip", "privacy", "topologies", "scripts", "tests", "docs", "examples",
           "deploy")
TOP_FILES = ("README.md", "ARCHITECTURE.md", "Makefile", "Dockerfile", "pyproject.toml")
SUFFIXES = {".py", ".md", ".toml", ".txt", ".sh", ".yml", ".yaml"}
# Files the tools write into a run's directory (scripts/report.py, winners.py, robustness.py,
# prevalidate.py): named in docs and code as outputs.
OUTPUTS = {"REPORT.md", "winners.md", "robustness.md"}

# A line break inside a comment or docstring, with its indentation and comment marker.
_BREAK = re.compile(r"[ \t]*\n[ \t]*(?:#+[ \t]*)?")
_CITATION = re.compile(
    r"(?<![\w./-])(?P<path>[\w./-]*\w\.md)\b"
    r"(?:,? ?§ ?(?P<number>\d+(?:\.\d+)*)|,? [\"“](?P<title>[^\"”]{1,80})[\"”])?")


def sources(root: Path) -> Iterator[Path]:
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*")):
            if path.suffix in SUFFIXES and path.is_file() and "__pycache__" not in path.parts:
                yield path
    for name in TOP_FILES:
        if (root / name).exists():
            yield root / name


def headings(doc: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in doc.read_text(encoding="utf-8").splitlines()
            if line.startswith("#")]


def resolve(cited: str, citing: Path, root: Path) -> Path | bool | None:
    """The cited file; False for an output name (not a citation); None if it does not exist."""
    parts = Path(cited).parts
    if len(parts) == 1:
        if cited in OUTPUTS:
            return False
        for candidate in (root / cited, citing.parent / cited):
            if candidate.is_file():
                return candidate
        return None
    if parts[0] not in (*FOLDERS, "..", "."):
        return False  # runs/..., DIR/..., OUT/...: a path the tools write
    path = (root / cited).resolve()
    return path if path.is_file() and path.is_relative_to(root) else None


def problems(text: str, citing: Path, root: Path) -> list[str]:
    """Every citation in `text` (of the file `citing`) that does not resolve, in words."""
    out = []
    flat = _BREAK.sub(" ", text.replace("`", ""))
    for m in _CITATION.finditer(flat):
        cited, number, title = m["path"], m["number"], m["title"]
        doc = resolve(cited, citing, root)
        if doc is False:
            continue
        if doc is None:
            out.append(f"{cited} is not in the repository")
            continue
        assert isinstance(doc, Path)
        if number is not None and not any(re.match(rf"{re.escape(number)}\.?\s", h + " ")
                                          for h in headings(doc)):
            out.append(f"{cited} has no section §{number}")
        if title is not None and not any(h.startswith(title) for h in headings(doc)):
            out.append(f'{cited} has no section "{title}"')
    return out


def test_every_citation_resolves_inside_the_repository() -> None:
    found = {}
    for path in sources(ROOT):
        if path == Path(__file__).resolve():
            continue  # its planted citations below are wrong on purpose
        bad = problems(path.read_text(encoding="utf-8", errors="replace"), path, ROOT)
        if bad:
            found[str(path.relative_to(ROOT))] = bad
    assert found == {}


def test_the_design_and_contracts_the_code_cites_are_here() -> None:
    design = headings(ROOT / "docs" / "DESIGN.md")
    for n in range(1, 7):
        assert any(h.startswith(f"{n}. ") for h in design), n
    assert (ROOT / "docs" / "CONTRACTS.md").is_file()


def test_planted_citations_are_reported(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "DESIGN.md").write_text("# Design\n\n## 1. The algorithm\n\n## Data\n")
    citing = tmp_path / "node" / "x.py"
    ok = ('"""See docs/DESIGN.md §1 and `docs/DESIGN.md`, "Data"; runs/a/REPORT.md; the\n'
          '    docs/DESIGN.md\n    §1 again."""\n# (docs/DESIGN.md,\n# "Data")\n')
    assert problems(ok, citing, tmp_path) == []
    bad = ("# DESIGN.md §1 (bare, from node/), docs/DESIGN.md §2, docs/DESIGN.md, \"Privacy\",\n"
           "# ../shared/DESIGN.md, dp_accounting.md §4, docs/DESIGN.md\n# §3\n")
    assert problems(bad, citing, tmp_path) == [
        "DESIGN.md is not in the repository",
        "docs/DESIGN.md has no section §2",
        'docs/DESIGN.md has no section "Privacy"',
        "../shared/DESIGN.md is not in the repository",
        "dp_accounting.md is not in the repository",
        "docs/DESIGN.md has no section §3",
    ]
