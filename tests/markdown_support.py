"""What the tests that read the docs' Markdown share: the anchors GitHub gives a page's headings."""

from __future__ import annotations

import re
from collections import Counter

FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r" {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*")
LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a heading: its text (a link's label, not its address) in lower case,
    punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", LINK.sub(r"\1", heading).lower()).replace(" ", "-")


def heading_anchors(page: str) -> list[str]:
    """The anchors of ``page``'s headings in order, a repeated one numbered as GitHub numbers it (``-1``,
    ``-2``); a ``#`` line inside fenced code is not a heading."""
    anchors: list[str] = []
    seen = Counter[str]()
    fence = ""
    for line in page.splitlines():
        opened = FENCE.match(line)
        if opened:
            marker = opened.group(1)
            if not fence:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence):
                fence = ""
            continue
        heading = None if fence else HEADING.fullmatch(line)
        if heading:
            anchor = github_anchor(heading.group(1))
            anchors.append(f"{anchor}-{seen[anchor]}" if seen[anchor] else anchor)
            seen[anchor] += 1
    return anchors
