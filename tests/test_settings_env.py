"""Settings: where `.env` files are found, and the values refused at start-up with one line."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from openai.types.realtime.realtime_reasoning_effort import RealtimeReasoningEffort

from callassist import envfiles as settings_module  # where .env files are found (project_root is patched)
from callassist.envfiles import dotenv_paths, env_file_values, project_root
from callassist.settings import ReasoningEffort, Settings, SettingsError, load_settings


def write_env(directory: Path, **values: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ".env"
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()), encoding="utf-8")
    return path


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A working directory, a checkout (project root) and a data dir, each its own directory."""
    cwd, root, data = tmp_path / "work", tmp_path / "checkout", tmp_path / "data"
    for directory in (cwd, root, data):
        directory.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(settings_module, "project_root", lambda: root)
    monkeypatch.setenv("CALLASSIST_DATA_DIR", str(data))
    monkeypatch.delenv("CALLASSIST_ENV_FILE", raising=False)  # the conftest may switch the search off
    return {"cwd": cwd, "root": root, "data": data}


def test_environment_beats_cwd_beats_project_root_beats_data_dir(
    places: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_env(places["data"], OWNER_NAME="Data", CALLASSIST_VOICE="ash", CALLASSIST_LANGUAGE="fr")
    write_env(places["root"], OWNER_NAME="Root", CALLASSIST_VOICE="cedar")
    write_env(places["cwd"], OWNER_NAME="Cwd")
    assert dotenv_paths() == [places[name] / ".env" for name in ("cwd", "root", "data")]

    settings = load_settings()
    assert (settings.owner_name, settings.voice, settings.language) == ("Cwd", "cedar", "fr")
    assert env_file_values("OWNER_NAME", "CALLASSIST_VOICE", "CALLASSIST_LANGUAGE", "PUBLIC_BASE_URL") == {
        "OWNER_NAME": "Cwd",
        "CALLASSIST_VOICE": "cedar",
        "CALLASSIST_LANGUAGE": "fr",
    }

    monkeypatch.setenv("OWNER_NAME", "Env")
    assert load_settings().owner_name == "Env"
    assert env_file_values("owner_name") == {"owner_name": "Env"}
    monkeypatch.setenv("OWNER_NAME", "")  # set but empty still counts, as it does for Settings
    assert env_file_values("OWNER_NAME") == {"OWNER_NAME": ""}


def test_a_command_started_elsewhere_finds_the_project_and_data_dir_env(
    places: dict[str, Path],
) -> None:
    write_env(places["root"], TWILIO_AUTH_TOKEN="token-from-root", CALLASSIST_PORT="9100")
    write_env(places["data"], PUBLIC_BASE_URL="https://calls.example.com", TWILIO_AUTH_TOKEN="ignored")
    assert dotenv_paths() == [places["root"] / ".env", places["data"] / ".env"]
    names = ("TWILIO_AUTH_TOKEN", "PUBLIC_BASE_URL", "CALLASSIST_PORT")
    assert env_file_values(*names) == {
        "TWILIO_AUTH_TOKEN": "token-from-root",
        "PUBLIC_BASE_URL": "https://calls.example.com",
        "CALLASSIST_PORT": "9100",
    }
    settings = load_settings()
    assert settings.port == 9100
    assert settings.public_base_url == "https://calls.example.com"
    assert settings.twilio_auth_token is not None
    assert settings.twilio_auth_token.get_secret_value() == "token-from-root"


def test_the_data_dir_can_itself_come_from_a_dotenv(
    places: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CALLASSIST_DATA_DIR")
    elsewhere = tmp_path / "elsewhere"
    write_env(places["root"], CALLASSIST_DATA_DIR=str(elsewhere))
    write_env(elsewhere, OWNER_NAME="Dana")
    assert dotenv_paths() == [places["root"] / ".env", elsewhere / ".env"]
    settings = load_settings()
    assert settings.data_dir == elsewhere and settings.owner_name == "Dana"
    # An explicit data dir (a command-line option) picks that directory's .env.
    other = tmp_path / "other"
    write_env(other, OWNER_NAME="Other")
    assert load_settings(data_dir=other).owner_name == "Other"
    assert dotenv_paths(other)[-1] == other / ".env"


def test_one_file_is_read_once_and_none_when_told(
    places: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings_module, "project_root", lambda: places["cwd"])  # started at the root
    write_env(places["cwd"], OWNER_NAME="Cwd")
    assert dotenv_paths() == [places["cwd"] / ".env"]
    assert Settings(_env_file=None).owner_name == "the owner"  # type: ignore[call-arg]
    assert Settings().owner_name == "Cwd"


def test_project_root_is_the_callassist_checkout(tmp_path: Path) -> None:
    checkout = tmp_path / "callassist"
    (checkout / "src" / "deep").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text('[project]\nname = "callassist"\n', encoding="utf-8")
    other = tmp_path / "other"
    (other / "sub").mkdir(parents=True)
    (other / "pyproject.toml").write_text('[project]\nname = "something-else"\n', encoding="utf-8")
    assert project_root([checkout / "src" / "deep"]) == checkout
    assert project_root([other / "sub"]) is None
    assert project_root([other / "sub", checkout]) == checkout
    # Run from this source tree, the checkout is found from the package itself.
    here = Path(settings_module.__file__).resolve()
    if (here.parents[2] / "pyproject.toml").is_file():
        assert project_root() == here.parents[2]


@pytest.mark.parametrize("value", ["english", "en-US", "EN", "eng", "e"])
def test_language_is_iso_639_1_only(value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, language=value)
    message = str(caught.value)
    assert "CALLASSIST_LANGUAGE" in message and "ISO-639-1" in message and "\n" not in message


def test_language_accepts_two_letters_and_empty_means_unset() -> None:
    assert load_settings(_env_file=None, language="fr").language == "fr"
    assert load_settings(_env_file=None, language="").language is None


def test_reasoning_effort_defaults_to_low_and_follows_the_sdk() -> None:
    assert load_settings(_env_file=None).reasoning_effort == "low"
    assert load_settings(_env_file=None, reasoning_effort="medium").reasoning_effort == "medium"
    assert set(typing.get_args(ReasoningEffort)) == set(typing.get_args(RealtimeReasoningEffort))
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, reasoning_effort="turbo")
    assert "CALLASSIST_REASONING_EFFORT" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://calls.example.com",
        "https://calls.example.com:8443",
        "http://calls.example.com:443",
        "https://203.0.113.5:8000",
        "https://calls.example.com:notaport",
    ],
)
def test_a_public_url_twilio_cannot_stream_to_is_refused(url: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, public_base_url=url, twilio_auth_token="t")
    message = str(caught.value)
    assert message.startswith("invalid configuration: PUBLIC_BASE_URL: must be https:// on port 443")
    assert "\n" not in message


@pytest.mark.parametrize(
    "url",
    [
        "https://calls.example.com",
        "https://calls.example.com:443/base",
        "http://127.0.0.1:8000",
        "http://localhost:9000",
        "http://[::1]:8000",
    ],
)
def test_https_on_443_or_a_loopback_url_is_fine(url: str) -> None:
    assert load_settings(_env_file=None, public_base_url=url, twilio_auth_token="t").public_base_url


def test_callassist_env_file_replaces_the_search(
    places: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_env(places["cwd"], OWNER_NAME="Cwd")
    write_env(places["root"], OWNER_NAME="Root")
    chosen = write_env(tmp_path / "etc", OWNER_NAME="Chosen", PUBLIC_BASE_URL="http://127.0.0.1:9")
    monkeypatch.setenv("CALLASSIST_ENV_FILE", str(chosen))
    assert dotenv_paths() == [chosen]
    assert load_settings().owner_name == "Chosen"
    assert env_file_values("OWNER_NAME", "PUBLIC_BASE_URL") == {
        "OWNER_NAME": "Chosen",
        "PUBLIC_BASE_URL": "http://127.0.0.1:9",
    }
    for none in ("", "none"):
        monkeypatch.setenv("CALLASSIST_ENV_FILE", none)
        assert dotenv_paths() == []
        assert load_settings().owner_name == "the owner"
    monkeypatch.setenv("CALLASSIST_ENV_FILE", str(tmp_path / "missing.env"))
    with pytest.raises(SettingsError, match=r"^CALLASSIST_ENV_FILE: no such file: .*missing\.env$"):
        load_settings()


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"timezone": "Mars/Olympus"}, "CALLASSIST_TIMEZONE"),
        ({"public_base_url": "example.com"}, "PUBLIC_BASE_URL"),
        ({"owner_phone": "555-1234"}, "OWNER_PHONE"),
        ({"vad_threshold": 3}, "CALLASSIST_VAD_THRESHOLD"),
        ({"turn_detection": "psychic"}, "CALLASSIST_TURN_DETECTION"),
        ({"public_base_url": "https://x.ngrok.app"}, "TWILIO_AUTH_TOKEN is required"),
    ],
)
def test_bad_settings_give_one_clear_line(overrides: dict[str, object], needle: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(**overrides)
    message = str(caught.value)
    assert needle in message and "\n" not in message


def test_stream_url_follows_the_public_url_scheme() -> None:
    public = load_settings(public_base_url="https://x.ngrok.app", twilio_auth_token="t")
    assert public.stream_url() == "wss://x.ngrok.app/voice/stream"
    assert load_settings(port=9001).stream_url() == "ws://127.0.0.1:9001/voice/stream"
