"""One Settings object for the whole server, read from the environment and `.env` files.

Names follow the README's configuration table exactly; a bad or missing value is reported as one
clear line by `load_settings()` instead of a traceback.

Where values come from (the environment first, then the `.env` files, CALLASSIST_ENV_FILE) is
`callassist.envfiles`.

One reason it is a little over 400 lines: every setting is declared here, with its validation and
its one-line error, so a newcomer reads them all in one place.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from callassist.calendar.timeutil import WorkingHours
from callassist.envfiles import DOTENV, ENV_FILE_VARIABLE, chosen_env_file, default_data_dir, dotenv_paths

DEFAULT_PORT = 8000
# The admin token guards every caller's data over the internet: long enough not to be guessed.
MIN_ADMIN_TOKEN_LENGTH = 24
VOICES = frozenset({"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"})
# `reasoning.effort` of reasoning Realtime models (openai.types.realtime.RealtimeReasoningEffort).
ReasoningEffort = Literal["minimal", "low", "medium", "high", "xhigh"]


class TurnDetection(StrEnum):
    server_vad = "server_vad"
    semantic_vad = "semantic_vad"


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


def machine_timezone() -> str:
    """The machine's IANA zone name (from TZ or /etc/localtime), or UTC when it can't be told."""
    if tz := os.environ.get("TZ", "").lstrip(":"):
        return tz
    try:
        target = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in target:
            return target.split("zoneinfo/", 1)[1]
    except OSError:
        pass
    return "UTC"


class Settings(BaseSettings):
    """Everything the server needs to know, with the defaults a newcomer should get."""

    model_config = SettingsConfigDict(
        env_file=DOTENV, env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    def __init__(self, **values: Any) -> None:
        # The .env files are looked for on each construction (the current directory may change);
        # `_env_file=None` (as tests pass) still means none at all.
        if "_env_file" not in values:
            data_dir = next(
                (
                    values[key]
                    for key in ("data_dir", "CALLASSIST_DATA_DIR", "callassist_data_dir")
                    if key in values
                ),
                None,
            )
            # pydantic-settings lets later files override earlier ones: lowest precedence first.
            values["_env_file"] = tuple(reversed(dotenv_paths(data_dir)))
        super().__init__(**values)

    # OpenAI
    openai_api_key: SecretStr | None = Field(default=None, validation_alias=_env("OPENAI_API_KEY"))
    openai_base_url: str | None = Field(default=None, validation_alias=_env("OPENAI_BASE_URL"))
    realtime_model: str = Field(
        default="gpt-realtime-2.1", validation_alias=_env("CALLASSIST_REALTIME_MODEL")
    )
    # The assistant's speech engine: OpenAI Realtime, or GPT-Live (full duplex, billed per second;
    # tools through a Responses backend model). GPT-Live refusing us at start (403, model refused)
    # falls back to Realtime for that call unless CALLASSIST_LIVE_FALLBACK=none (then: voicemail).
    engine: Literal["realtime", "live"] = Field(
        default="realtime", validation_alias=_env("CALLASSIST_ENGINE")
    )
    live_model: str = Field(default="gpt-live-1.1", validation_alias=_env("CALLASSIST_LIVE_MODEL"))
    live_backend_model: str = Field(
        default="gpt-5.4-mini", validation_alias=_env("CALLASSIST_LIVE_BACKEND_MODEL")
    )
    live_fallback: Literal["realtime", "none"] = Field(
        default="realtime", validation_alias=_env("CALLASSIST_LIVE_FALLBACK")
    )
    voice: str = Field(default="marin", validation_alias=_env("CALLASSIST_VOICE"))
    transcription_model: str = Field(
        default="gpt-transcribe", validation_alias=_env("CALLASSIST_TRANSCRIPTION_MODEL")
    )
    language: str | None = Field(default=None, validation_alias=_env("CALLASSIST_LANGUAGE"))
    # Only sent to reasoning models (gpt-realtime-2 and later); "low" keeps answers quick on the phone.
    reasoning_effort: ReasoningEffort = Field(
        default="low", validation_alias=_env("CALLASSIST_REASONING_EFFORT")
    )
    turn_detection: TurnDetection = Field(
        default=TurnDetection.server_vad, validation_alias=_env("CALLASSIST_TURN_DETECTION")
    )
    vad_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=0.5, validation_alias=_env("CALLASSIST_VAD_THRESHOLD")
    )
    vad_prefix_padding_ms: Annotated[int, Field(ge=0, le=5000)] = Field(
        default=300, validation_alias=_env("CALLASSIST_VAD_PREFIX_PADDING_MS")
    )
    vad_silence_ms: Annotated[int, Field(ge=0, le=10000)] = Field(
        default=500, validation_alias=_env("CALLASSIST_VAD_SILENCE_MS")
    )
    vad_eagerness: Literal["low", "medium", "high", "auto"] = Field(
        default="auto", validation_alias=_env("CALLASSIST_VAD_EAGERNESS")
    )
    idle_timeout_ms: Annotated[int, Field(ge=0, le=60000)] = Field(
        default=0, validation_alias=_env("CALLASSIST_IDLE_TIMEOUT_MS")
    )
    noise_reduction: Literal["near_field", "far_field", "off"] = Field(
        default="near_field", validation_alias=_env("CALLASSIST_NOISE_REDUCTION")
    )

    # Twilio
    twilio_account_sid: str | None = Field(default=None, validation_alias=_env("TWILIO_ACCOUNT_SID"))
    twilio_auth_token: SecretStr | None = Field(default=None, validation_alias=_env("TWILIO_AUTH_TOKEN"))
    public_base_url: str | None = Field(default=None, validation_alias=_env("PUBLIC_BASE_URL"))
    ring_owner_seconds: Annotated[int, Field(ge=0, le=600)] = Field(
        default=20, validation_alias=_env("CALLASSIST_RING_OWNER_SECONDS")
    )
    trust_owner_caller_id: bool = Field(
        default=False, validation_alias=_env("CALLASSIST_TRUST_OWNER_CALLER_ID")
    )
    max_calls: Annotated[int, Field(ge=1, le=10000)] = Field(
        default=50, validation_alias=_env("CALLASSIST_MAX_CALLS")
    )

    # The owner
    owner_name: str = Field(default="the owner", validation_alias=_env("OWNER_NAME"))
    owner_phone: str | None = Field(default=None, validation_alias=_env("OWNER_PHONE"))
    # Warm transfer during an assistant call (transfer_to_owner, or the caller pressing 0): `always`
    # when the caller asks, `urgent` only when it is urgent, the caller insists or is a VIP contact,
    # `never`. Needs OWNER_PHONE and Twilio's REST credentials (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN).
    transfer: Literal["always", "urgent", "never"] = Field(
        default="urgent", validation_alias=_env("CALLASSIST_TRANSFER")
    )
    timezone: str = Field(default_factory=machine_timezone, validation_alias=_env("CALLASSIST_TIMEZONE"))

    # Calendar and tools
    calendar: Literal["local", "caldav"] = Field(
        default="local", validation_alias=_env("CALLASSIST_CALENDAR")
    )
    caldav_url: str | None = Field(default=None, validation_alias=_env("CALLASSIST_CALDAV_URL"))
    caldav_username: str | None = Field(default=None, validation_alias=_env("CALLASSIST_CALDAV_USERNAME"))
    caldav_password: SecretStr | None = Field(
        default=None, validation_alias=_env("CALLASSIST_CALDAV_PASSWORD")
    )
    caldav_calendar: str | None = Field(default=None, validation_alias=_env("CALLASSIST_CALDAV_CALENDAR"))
    working_hours: str = Field(
        default="Mon-Fri 09:00-17:00", validation_alias=_env("CALLASSIST_WORKING_HOURS")
    )
    tool_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = Field(
        default=8.0, validation_alias=_env("CALLASSIST_TOOL_TIMEOUT_SECONDS")
    )
    admin_token: SecretStr | None = Field(default=None, validation_alias=_env("CALLASSIST_ADMIN_TOKEN"))
    # The one header the owner's tunnel or proxy sets to the client's address (e.g. CF-Connecting-IP),
    # for counting wrong tokens per client; unset: the last X-Forwarded-For entry, which proxies append.
    client_ip_header: str | None = Field(default=None, validation_alias=_env("CALLASSIST_CLIENT_IP_HEADER"))

    # Records, memory, notifications
    summary_timeout_seconds: Annotated[float, Field(ge=0, le=30)] = Field(
        default=5.0, validation_alias=_env("CALLASSIST_SUMMARY_TIMEOUT_SECONDS")
    )
    prices: str | None = Field(default=None, validation_alias=_env("CALLASSIST_PRICES"))
    history_calls: Annotated[int, Field(ge=0, le=20)] = Field(
        default=3, validation_alias=_env("CALLASSIST_HISTORY_CALLS")
    )
    twilio_phone_number: str | None = Field(default=None, validation_alias=_env("TWILIO_PHONE_NUMBER"))
    twilio_api_base_url: str | None = Field(default=None, validation_alias=_env("TWILIO_API_BASE_URL"))
    notify_sms: bool = Field(default=True, validation_alias=_env("CALLASSIST_NOTIFY_SMS"))
    # When the assistant can't answer: the longest voicemail (Twilio <Record maxLength>; Twilio
    # transcribes recordings of up to 2 minutes) and whether Twilio transcribes it (billed by Twilio).
    voicemail_max_seconds: Annotated[int, Field(ge=5, le=600)] = Field(
        default=120, validation_alias=_env("CALLASSIST_VOICEMAIL_MAX_SECONDS")
    )
    voicemail_transcribe: bool = Field(default=True, validation_alias=_env("CALLASSIST_VOICEMAIL_TRANSCRIBE"))
    smtp_url: SecretStr | None = Field(default=None, validation_alias=_env("CALLASSIST_SMTP_URL"))
    notify_email: str | None = Field(default=None, validation_alias=_env("CALLASSIST_NOTIFY_EMAIL"))

    # Call recording (off by default; the greeting says the call is recorded when on)
    record: bool = Field(default=False, validation_alias=_env("CALLASSIST_RECORD"))
    record_retention_days: Annotated[int, Field(ge=1, le=3650)] = Field(
        default=30, validation_alias=_env("CALLASSIST_RECORD_RETENTION_DAYS")
    )

    # Storage and server
    data_dir: Path = Field(default_factory=default_data_dir, validation_alias=_env("CALLASSIST_DATA_DIR"))
    database_url: str | None = Field(default=None, validation_alias=_env("DATABASE_URL"))
    host: str = Field(default="127.0.0.1", validation_alias=_env("CALLASSIST_HOST"))
    port: Annotated[int, Field(ge=1, le=65535)] = Field(
        default=DEFAULT_PORT, validation_alias=_env("CALLASSIST_PORT")
    )
    shutdown_grace_seconds: Annotated[float, Field(ge=0, le=7)] = Field(
        default=5.0, validation_alias=_env("CALLASSIST_SHUTDOWN_GRACE_SECONDS")
    )
    max_call_minutes: Annotated[float, Field(ge=0, le=240)] = Field(
        default=30.0, validation_alias=_env("CALLASSIST_MAX_CALL_MINUTES")
    )
    # OpenAI ends a Realtime session at 60 minutes: longer calls move to a fresh one at a quiet moment.
    session_rotate_minutes: Annotated[float, Field(ge=0, le=58)] = Field(
        default=50.0, validation_alias=_env("CALLASSIST_SESSION_ROTATE_MINUTES")
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", validation_alias=_env("CALLASSIST_LOG_LEVEL")
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r} (e.g. Europe/Paris)") from exc
        return value

    @field_validator("admin_token")
    @classmethod
    def _long_admin_token(cls, value: SecretStr | None) -> SecretStr | None:
        # Empty means unset (loopback only). The message never quotes the value.
        token = value.get_secret_value() if value is not None else ""
        if token and len(token.strip()) < MIN_ADMIN_TOKEN_LENGTH:
            raise ValueError(
                f"must be at least {MIN_ADMIN_TOKEN_LENGTH} characters; make one with "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return value

    @field_validator("client_ip_header")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        name = (value or "").strip()
        if not name:
            return None
        if not re.fullmatch(r"[A-Za-z0-9-]+", name):
            raise ValueError(f"not an HTTP header name: {name!r} (e.g. CF-Connecting-IP)")
        return name.lower()

    @field_validator("voice")
    @classmethod
    def _voice(cls, value: str) -> str:
        if value not in VOICES:
            raise ValueError(f"unknown voice {value!r}; one of {', '.join(sorted(VOICES))}")
        return value

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        if value and not re.fullmatch(r"[a-z]{2}", value):
            raise ValueError(f"must be a two-letter ISO-639-1 code such as en, fr or de, not {value!r}")
        return value or None

    @field_validator("working_hours")
    @classmethod
    def _working_hours(cls, value: str) -> str:
        WorkingHours.parse(value)  # raises ValueError with a readable reason
        return value

    @field_validator("prices")
    @classmethod
    def _prices(cls, value: str | None) -> str | None:
        if value:
            from callassist.realtime.pricing import PriceTable

            try:
                PriceTable.from_json(value)
            except (ValueError, TypeError, AttributeError) as exc:
                raise ValueError(
                    f'must be JSON like {{"gpt-realtime-2.1": {{"audio_out": 64}}}} ({exc})'
                ) from None
        return value

    @field_validator("public_base_url", "openai_base_url", "twilio_api_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"must be an http(s) URL such as https://example.ngrok.app, not {value!r}")
        return value.rstrip("/")

    @field_validator("public_base_url")
    @classmethod
    def _twilio_reachable(cls, value: str | None) -> str | None:
        # Twilio opens the media stream only as wss:// on port 443: a public http:// URL or another
        # port gives webhooks that work and calls that fail after the greeting never arrives.
        if value is None or _is_loopback_url(value):
            return value
        parts = urlsplit(value)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme != "https" or port not in (None, 443):
            raise ValueError(
                f"must be https:// on port 443 when it is not local (Twilio opens media streams only as "
                f"wss:// on 443), not {value!r}"
            )
        return value

    @field_validator("owner_phone", "twilio_phone_number")
    @classmethod
    def _e164(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        cleaned = value.replace(" ", "").replace("-", "")
        if not (cleaned.startswith("+") and cleaned[1:].isdigit() and 8 <= len(cleaned) <= 16):
            raise ValueError(f"must be an E.164 number such as +15551234567, not {value!r}")
        return cleaned

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.twilio_account_sid and not self.twilio_account_sid.startswith("AC"):
            raise ValueError("TWILIO_ACCOUNT_SID must start with 'AC'")
        if (
            self.public_base_url
            and not _is_loopback_url(self.public_base_url)
            and not self.signatures_required
        ):
            raise ValueError(
                "TWILIO_AUTH_TOKEN is required when PUBLIC_BASE_URL is not local: without it anyone "
                "who finds the URL could place calls on your OpenAI account"
            )
        if self.calendar == "caldav" and not self.caldav_url:
            raise ValueError("CALLASSIST_CALDAV_URL is required when CALLASSIST_CALENDAR=caldav")
        if self.smtp_url is not None and self.smtp_url.get_secret_value():
            from callassist.notify.email import parse_smtp_url

            config = parse_smtp_url(self.smtp_url.get_secret_value())  # its errors never quote the URL
            if not (self.notify_email or config.to):
                raise ValueError(
                    "CALLASSIST_NOTIFY_EMAIL (or ?to= in CALLASSIST_SMTP_URL) is required for e-mail"
                )
        return self

    # Derived values -------------------------------------------------------------------------

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def public_url(self) -> str:
        """The base URL Twilio reaches us at (no trailing slash)."""
        return self.public_base_url or f"http://127.0.0.1:{self.port}"

    def stream_url(self, path: str = "/voice/stream") -> str:
        """The Media Stream URL for TwiML: wss:// behind https, ws:// for plain local http."""
        parts = urlsplit(self.public_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}{parts.path}{path}"

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'callassist.db'}"

    @property
    def hours(self) -> WorkingHours:
        return WorkingHours.parse(self.working_hours)

    @property
    def local_only(self) -> bool:
        """Not reachable from outside (no public URL configured): trials with the simulator."""
        return self.public_base_url is None or _is_loopback_url(self.public_base_url)

    @property
    def signatures_required(self) -> bool:
        return self.signature_token is not None

    @property
    def transfer_possible(self) -> bool:
        """A live call can be put through to the owner: allowed, a number to ring, and Twilio's REST
        API to ring it with."""
        return bool(
            self.transfer != "never"
            and self.owner_phone
            and self.twilio_account_sid
            and self.signature_token is not None
        )

    @property
    def signature_token(self) -> str | None:
        """The auth token Twilio signs its requests with, or None when signatures are not checked."""
        if self.twilio_auth_token is None or self.twilio_auth_token.get_secret_value() == "":
            return None
        return self.twilio_auth_token.get_secret_value()

    def local_now(self) -> datetime:
        return datetime.now(self.zone)


def _is_loopback_url(url: str) -> bool:
    return (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


class SettingsError(Exception):
    """A configuration problem, phrased as one line for the person starting the server."""


_FIELD_TO_ENV = {
    name: (field.validation_alias.choices[0] if isinstance(field.validation_alias, AliasChoices) else name)
    for name, field in Settings.model_fields.items()
}


def load_settings(**overrides: object) -> Settings:
    """Build Settings, turning validation errors into a single readable SettingsError."""
    missing = [path for path in chosen_env_file() or [] if not path.is_file()]
    if missing and "_env_file" not in overrides:
        raise SettingsError(f"{ENV_FILE_VARIABLE}: no such file: {missing[0]}")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            location = error["loc"][0] if error["loc"] else ""
            message = error["msg"].removeprefix("Value error, ")
            if location:
                message = f"{_FIELD_TO_ENV.get(str(location), str(location))}: {message}"
            problems.append(message)
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None
