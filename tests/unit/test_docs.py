"""The repository's documents link only to files the repository holds."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _documents() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / name for name in listed if (ROOT / name).exists()]


def test_every_link_in_a_document_points_at_a_file_of_the_repository() -> None:
    broken = []
    for document in _documents():
        for target in LINK.findall(document.read_text()):
            path = target.split("#")[0]
            if "://" in target or target.startswith(("mailto:", "/")) or ".." in Path(path).parts:
                broken.append(f"{document.relative_to(ROOT)}: {target} leaves the repository")
            elif path and not (document.parent / path).exists():
                broken.append(f"{document.relative_to(ROOT)}: {target} does not exist")
    assert broken == []


def test_the_readme_links_to_the_architecture_document() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "(docs/architecture.md)" in readme
    assert (ROOT / "docs" / "architecture.md").exists()


def test_the_architecture_document_draws_the_exception_tree_of_the_code() -> None:
    from warren import exceptions

    doc = exceptions.__doc__ or ""
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "WarrenError")
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    tree = "\n".join(line.removeprefix("    ") for line in lines[start:end])
    assert f"```\n{tree}\n```" in (ROOT / "docs" / "architecture.md").read_text()
