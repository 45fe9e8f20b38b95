"""The text builtins: ``upper``, ``lower``, ``title``, ``trim``, ``split``, ``replace``, ``split_name``,
``unescape_html`` and ``strip_html``. Null gives null; anything but text is an error."""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any

from ._errors import preview_value
from ._function_errors import FunctionError, fail

if TYPE_CHECKING:
    from html.parser import HTMLParser

__all__ = [
    "lower",
    "replace",
    "split",
    "split_name",
    "strip_html",
    "title",
    "trim",
    "unescape_html",
    "upper",
]

_SPACE = re.compile(r"\s+")
# Words that start a family name ("Ludwig van Beethoven", "Maria de la Cruz"), compared in lower case.
_PARTICLES = frozenset(
    {"al", "bin", "da", "dal", "de", "degli", "del", "della", "der", "di", "dos", "du", "el", "la", "le", "st",
     "st.", "ten", "ter", "van", "von", "zu"}
)  # fmt: skip
_SUFFIXES = frozenset({"jr", "jr.", "sr", "sr.", "ii", "iii", "iv", "v", "phd", "md", "esq", "esq."})
_TITLES = frozenset(
    {"mr", "mr.", "mrs", "mrs.", "ms", "ms.", "miss", "mx", "mx.", "dr", "dr.", "prof", "prof.", "sir"}
)
_MAX_TEXT = 100_000


def _text(value: Any, function: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise FunctionError(f"{function}() expects a string, found {preview_value(value)}")
    if len(value) > _MAX_TEXT:
        raise FunctionError(f"{function}() takes at most {_MAX_TEXT} characters, got {len(value)}")
    return value


def split_name(full: Any) -> dict[str, str | None] | None:
    """``{"first": …, "last": …}`` from one full name. The rules (docs/functions.md):

    - spaces are trimmed and collapsed; an empty name gives null;
    - "Last, First" (one comma) is read as family name first;
    - a leading title (Mr, Mrs, Ms, Miss, Mx, Dr, Prof, Sir) is dropped;
    - the last word is the family name, with the particles before it (van, von, de, da, del, la, …) and a
      suffix after it (Jr., Sr., II, III, …); the words before are the first name;
    - a single word is the first name; last is then null (so a field's ``default:`` applies).
    """
    text = _text(full, "split_name")
    if text is None:
        return None
    text = _SPACE.sub(" ", text).strip()
    if not text:
        return None
    if text.count(",") == 1:
        family, _, given = (part.strip() for part in text.partition(","))
        if family and given and given.lower().strip(".") not in {s.strip(".") for s in _SUFFIXES}:
            return {"first": given, "last": family}
        text = f"{family} {given}".strip()
    words = text.split(" ")
    if len(words) > 1 and words[0].lower() in _TITLES:
        words = words[1:]
    if len(words) == 1:
        return {"first": words[0], "last": None}
    end = len(words)
    while end > 1 and words[end - 1].lower().rstrip(",") in _SUFFIXES:
        end -= 1
    if end == 1:  # "John Jr." : no family name apart from the suffix
        return {"first": words[0], "last": " ".join(words[1:])}
    start = end - 1
    while start > 1 and words[start - 1].lower() in _PARTICLES:
        start -= 1
    return {"first": " ".join(words[:start]), "last": " ".join(words[start:])}


def unescape_html(value: Any) -> str | None:
    """``&amp;`` -> ``&``, ``&#39;`` -> ``'``: every HTML character reference, as a browser reads it."""
    text = _text(value, "unescape_html")
    if text is None:
        return None
    import html  # here: the html package costs start-up to every mapping, and few use it

    return html.unescape(text)


@functools.cache
def _text_only() -> type[HTMLParser]:
    """The parser class behind strip_html, made on first use (html.parser is not imported at start-up)."""
    from html.parser import HTMLParser

    class TextOnly(HTMLParser):
        _SKIPPED = frozenset({"script", "style", "head", "title"})
        _BREAKS = frozenset({"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6"})

        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.parts: list[str] = []
            self._skipping = 0

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag in self._SKIPPED:
                self._skipping += 1
            elif tag in self._BREAKS:
                self.parts.append(" ")

        def handle_endtag(self, tag: str) -> None:
            if tag in self._SKIPPED:
                self._skipping = max(self._skipping - 1, 0)
            elif tag in self._BREAKS:
                self.parts.append(" ")

        def handle_data(self, data: str) -> None:
            if not self._skipping:
                self.parts.append(data)

    return TextOnly


def strip_html(value: Any) -> str | None:
    """The text of an HTML fragment: tags removed (and the content of script and style), character
    references decoded, runs of whitespace collapsed to one space, trimmed."""
    text = _text(value, "strip_html")
    if text is None:
        return None
    parser = _text_only()()
    parser.feed(text)
    parser.close()
    parts: list[str] = parser.parts  # type: ignore[attr-defined]
    return _SPACE.sub(" ", "".join(parts)).strip()


def upper(text: Any) -> str | None:
    if text is None:
        return None
    if isinstance(text, str):
        return text.upper()
    raise fail("a string", text)


def lower(text: Any) -> str | None:
    if text is None:
        return None
    if isinstance(text, str):
        return text.lower()
    raise fail("a string", text)


# The same word boundaries as Jinja's own title filter, so title(x) and x | title agree.
_WORD_START = re.compile(r"([-\s({\[<]+)")


def title(text: Any) -> str | None:
    if text is None:
        return None
    if isinstance(text, str):
        return "".join(part[0].upper() + part[1:].lower() for part in _WORD_START.split(text) if part)
    raise fail("a string", text)


def trim(text: Any, chars: Any = None) -> str | None:
    if chars is not None and not isinstance(chars, str):
        raise fail("a string of characters to trim", chars)
    if text is None:
        return None
    if isinstance(text, str):
        return text.strip(chars)
    raise fail("a string", text)


def split(text: Any, separator: Any) -> list[str] | None:
    if not isinstance(separator, str) or not separator:
        raise fail("a non-empty string as separator", separator)
    if text is None:
        return None
    if isinstance(text, str):
        return text.split(separator)
    raise fail("a string", text)


def replace(text: Any, old: Any, new: Any) -> str | None:
    if not isinstance(old, str):
        raise fail("a string to replace", old)
    if not isinstance(new, str):
        raise fail("a string as replacement", new)
    if text is None:
        return None
    if isinstance(text, str):
        return text.replace(old, new)
    raise fail("a string", text)
