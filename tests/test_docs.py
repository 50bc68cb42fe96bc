"""The documentation stays true: the games' generated wire references match what
`tickline game doc` makes from their declarations today, and every relative link in
the Markdown points at a file in the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tickline.shared.games import load
from tickline.shared.schema import describe

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ["arena", "goofspiel"]  # docs/games/NAME.md, from `tickline game doc NAME`

# [text](target) and ![alt](target), with an optional "title"; and [label]: target definitions.
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?", re.MULTILINE)
FENCED_CODE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)


def _generated(name: str) -> str:
    rules = load(name)()
    return describe(rules.name, rules.version, rules.input_schema(), rules.view_schema())


@pytest.mark.parametrize("name", GENERATED)
def test_a_games_reference_is_what_tickline_game_doc_generates(name: str) -> None:
    path = ROOT / "docs" / "games" / f"{name}.md"
    comment, _, body = path.read_text(encoding="utf-8").partition("\n")
    assert comment.startswith("<!--") and comment.endswith("-->"), f"{path} must start with a one-line HTML comment"
    assert body == _generated(name), (
        f"{path.relative_to(ROOT)} is out of date; regenerate it: keep its first line and replace the rest "
        f"with the output of `tickline game doc {name}`"
    )


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "docs" / "games").glob("*.md"))]


def _link_targets(text: str) -> list[str]:
    """Every link target in ``text`` outside code (fenced blocks and inline code spans)."""
    prose = INLINE_CODE.sub("", FENCED_CODE.sub("", text))
    return INLINE_LINK.findall(prose) + REFERENCE_LINK.findall(prose)


def test_the_link_finder_sees_links_and_skips_code() -> None:
    text = '[a](docs/a.md) ![b](b.png "title") `[c](c.md)`\n```\n[d](d.md)\n```\n[e]: e.md\n'
    assert _link_targets(text) == ["docs/a.md", "b.png", "e.md"]


def test_every_relative_link_in_the_docs_points_at_a_file_in_the_repository() -> None:
    files = _markdown_files()
    assert ROOT / "docs" / "games.md" in files and ROOT / "docs" / "games" / "arena.md" in files
    broken = []
    for path in files:
        for target in _link_targets(path.read_text(encoding="utf-8")):
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL, or an anchor in the same page: not a file
            relative = target.split("#", 1)[0]
            resolved = (path.parent / relative).resolve()
            if not resolved.is_relative_to(ROOT) or not resolved.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert not broken, "links to files that do not exist in the repository:\n" + "\n".join(broken)
