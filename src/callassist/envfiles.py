"""Where the settings come from: the environment, then the `.env` files.

First match wins: the environment, then `./.env` (the current directory), then the `.env` at the root
of the source checkout callassist runs from, then `.env` in the data directory. So every command
finds the same `.env`, wherever it is started from. CALLASSIST_ENV_FILE (in the environment) names
one file to read instead, or "none" for no .env file at all.

`settings.Settings` reads these files; `env_file_values()` reads a few raw values from the same
places for commands that must not depend on every setting being valid.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

from dotenv import dotenv_values

DOTENV = ".env"
ENV_FILE_VARIABLE = "CALLASSIST_ENV_FILE"
PROJECT_NAME = "callassist"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "callassist"


def _is_callassist_checkout(directory: Path) -> bool:
    try:
        with (directory / "pyproject.toml").open("rb") as file:
            return tomllib.load(file).get("project", {}).get("name") == PROJECT_NAME
    except (OSError, tomllib.TOMLDecodeError, AttributeError):
        return False


def project_root(starts: Iterable[Path] | None = None) -> Path | None:
    """The source checkout callassist runs from: the nearest directory above this file, or else above
    the current directory, whose pyproject.toml is callassist's. None for a plain installed package
    run from elsewhere."""
    if starts is None:
        starts = (Path(__file__).resolve().parent, Path.cwd().resolve())
    for start in starts:
        for directory in (start, *start.parents):
            if _is_callassist_checkout(directory):
                return directory
    return None


def _lowercase_keys(values: Mapping[str, str | None]) -> dict[str, str | None]:
    return {key.lower(): value for key, value in values.items()}


def _read_dotenv(path: Path) -> dict[str, str | None]:
    try:
        return _lowercase_keys(dotenv_values(path, encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return {}


def dotenv_paths(data_dir: Path | str | None = None) -> list[Path]:
    """The `.env` files settings are read from, highest precedence first, existing ones only, each
    once: `./.env`, the project root's `.env` (see `project_root`), and the data directory's.

    The data directory is `data_dir` if given, else CALLASSIST_DATA_DIR from the environment or
    from one of the first two files, else the default (~/.local/share/callassist).

    CALLASSIST_ENV_FILE in the environment replaces the search: a path means that file only,
    an empty value or "none" means no .env file at all (tests, or a service with its own env).
    """
    chosen = chosen_env_file()
    if chosen is not None:
        return [path for path in chosen if path.is_file()]
    candidates = [Path.cwd() / DOTENV]
    if (root := project_root()) is not None:
        candidates.append(root / DOTENV)
    if data_dir is None:
        data_dir = _environ_lower().get("callassist_data_dir")
    if data_dir is None:
        data_dir = next(
            (
                value
                for path in candidates
                if path.is_file() and (value := _read_dotenv(path).get("callassist_data_dir"))
            ),
            None,
        )
    candidates.append(Path(data_dir or default_data_dir()) / DOTENV)
    found: list[Path] = []
    seen: set[Path] = set()
    for path in candidates:
        resolved = path.resolve()
        if resolved not in seen and path.is_file():
            seen.add(resolved)
            found.append(path)
    return found


def chosen_env_file() -> list[Path] | None:
    """CALLASSIST_ENV_FILE from the environment: None when unset (search as usual), [] for "" or
    "none" (no .env at all), else [the file to read instead of searching]."""
    value = os.environ.get(ENV_FILE_VARIABLE)
    if value is None:
        return None
    value = value.strip()
    return [] if value.lower() in ("", "none") else [Path(value).expanduser()]


def _environ_lower() -> dict[str, str]:
    return {key.lower(): value for key, value in os.environ.items()}


def env_file_values(*names: str, data_dir: Path | str | None = None) -> dict[str, str]:
    """Raw values of the named settings (e.g. "TWILIO_AUTH_TOKEN", "PUBLIC_BASE_URL",
    "CALLASSIST_PORT") as `serve` would see them, for commands that need a few without building
    (and validating) all Settings: each from the environment, else from the first of
    `dotenv_paths()` that sets it. Names match case-insensitively, as Settings does; a name set
    nowhere is left out, and an empty value is returned as "" (the caller decides what it means).
    """
    environ = _environ_lower()
    sources: list[Mapping[str, str | None]] = [environ]
    sources += [_read_dotenv(path) for path in dotenv_paths(data_dir)]
    values: dict[str, str] = {}
    for name in names:
        for source in sources:
            value = source.get(name.lower())
            if value is not None:
                values[name] = value
                break
    return values
