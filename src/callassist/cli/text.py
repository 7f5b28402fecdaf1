"""How the record commands (`calls`, `messages`, `notices`) show times, people and stored text."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from callassist.settings import Settings

NOTICE_STYLES = {"failed": "bold red", "pending": "yellow", "sent": "green"}


def local(moment: datetime, settings: Settings, spec: str = "%a %Y-%m-%d %H:%M") -> str:
    return moment.astimezone(settings.zone).strftime(spec)


def local_since(moment: datetime, since: datetime, settings: Settings) -> str:
    """`moment` local: the time alone on the (local) day of `since`, else with its date."""
    same_day = moment.astimezone(settings.zone).date() == since.astimezone(settings.zone).date()
    return local(moment, settings, "%H:%M" if same_day else "%a %Y-%m-%d %H:%M")


def duration(total: float | None) -> str:
    if total is None:
        return "-"
    minutes, seconds = divmod(round(total), 60)
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


def who(name: str | None, number: str | None) -> str:
    return " ".join(part for part in (name, number) if part) or "unknown caller"


def shorten(text: str, width: int = 160) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def terminal_safe(text: str) -> str:
    """Stored text as one line a terminal prints and never obeys: whitespace runs become one space
    (as the outbox stores a reason), any other control or format character is shown escaped."""
    import unicodedata

    return "".join(
        repr(char)[1:-1] if unicodedata.category(char) in ("Cc", "Cf") else char
        for char in " ".join(text.split())
    )


def attempts(count: int) -> str:
    return f"{count} attempt{'s' if count != 1 else ''}"
