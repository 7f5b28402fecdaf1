"""Text a caller can influence, made safe to store and to reuse: one line, bounded, no control characters.

Callers choose what they say, and the model turns it into tool arguments (a name, a message, notes)
and into the summary of the call. That text is stored, printed for the owner, sent by SMS and
e-mail, written into calendar events and, on the caller's next call, quoted in the model's
instructions. Each of those places has its own escaping (iCalendar, e-mail headers, the prompt's
fenced data section), but none of them needs a line break, a tab, a bidi override or ten thousand
characters from a caller. So every such value is normalised here, where it enters, before anything
stores or reuses it:

- control characters, Unicode line and paragraph separators and format characters (bidi overrides
  and isolates, zero-width spaces, the invisible "tag" characters) become a space or vanish;
  the zero-width (non-)joiners that some scripts and emoji need are kept;
- runs of whitespace become one space, and the ends are trimmed;
- the result is cut to a bound (with "…" when something was cut).

Nothing is escaped here (`<` stays `<`): escaping is for the place the text is put, and each does
its own (the prompt replaces angle brackets, the dashboard shows text as text).
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import BeforeValidator

NAME_CHARS = 80  # a caller's name
TITLE_CHARS = 120  # a calendar event's title
NOTES_CHARS = 1000  # what a meeting is about
MESSAGE_CHARS = 2000  # a message for the owner
SUMMARY_CHARS = 1000  # the summary of a call
REASON_CHARS = 200  # why they called, in a few words

ELLIPSIS = "…"
# Format characters (category Cf) that real text needs: the joiners of Persian, Indic scripts and emoji.
_KEPT_FORMAT = frozenset({"\u200c", "\u200d"})
# Categories that never belong in a caller's one-line text: controls (tab, newline, NUL, C1 ...),
# format characters (bidi controls, zero-width space, BOM, tags), surrogates, private use, line and
# paragraph separators.
_DROPPED = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def _replacement(char: str) -> str | None:
    """What `char` becomes: None to keep it, " " for a separator, "" to drop it."""
    category = unicodedata.category(char)
    if category not in _DROPPED or char in _KEPT_FORMAT:
        return None
    # Controls and separators split words ("Alex\nSYSTEM" is two words); format characters don't.
    return "" if category in ("Cf", "Cs", "Co") else " "


def one_line(text: str | None, limit: int | None) -> str:
    """`text` as one clean line of at most `limit` characters ('' for None or nothing left).

    `limit=None` cuts nothing: for values whose length a validator then checks (and refuses).
    """
    if not text:
        return ""
    if limit is not None and limit < 1:
        raise ValueError("limit must be at least 1")
    # NFC first: a name typed with combining accents and the same name precomposed are one name.
    text = unicodedata.normalize("NFC", str(text))
    cleaned = []
    for char in text:
        replacement = _replacement(char)
        cleaned.append(char if replacement is None else replacement)
    flat = " ".join("".join(cleaned).split())
    if limit is None or len(flat) <= limit:
        return flat
    return flat[: limit - len(ELLIPSIS)].rstrip() + ELLIPSIS


def optional_line(text: str | None, limit: int | None) -> str | None:
    """Like `one_line`, but None when nothing is left."""
    return one_line(text, limit) or None


def name(text: str | None) -> str | None:
    """A caller's name, one clean line (None when empty)."""
    return optional_line(text, NAME_CHARS)


def _field(value: object) -> object:
    return one_line(value, None) if isinstance(value, str) else value


# A tool argument a caller dictates: normalised before its constraints (min/max length) are checked,
# so a name that is only control characters is empty, and an overlong one is refused, not cut.
OneLine = Annotated[str, BeforeValidator(_field)]
