"""Settings: providers resolve from keys, and every mistake is one clear line."""

import subprocess
import sys

import pytest

from mindbot.config import Settings
from mindbot.errors import ConfigError

from conftest import make_settings


def test_auto_picks_local_models_without_keys():
    providers = make_settings().resolve()
    assert (providers.stt, providers.llm, providers.tts) == ("whisper", "local", "piper")


def test_auto_picks_cloud_providers_when_their_keys_are_set():
    settings = make_settings(deepgram_api_key="dg", openai_api_key="sk", cartesia_api_key="ca")
    providers = settings.resolve()
    assert (providers.stt, providers.llm, providers.tts) == ("deepgram", "openai", "cartesia")


@pytest.mark.parametrize(
    ("choice", "variable"),
    [
        ({"stt": "deepgram"}, "MINDBOT_DEEPGRAM_API_KEY"),
        ({"llm": "openai"}, "MINDBOT_OPENAI_API_KEY"),
        ({"tts": "cartesia"}, "MINDBOT_CARTESIA_API_KEY"),
    ],
)
def test_a_chosen_provider_without_its_key_names_the_variable(choice, variable):
    with pytest.raises(ConfigError) as error:
        make_settings(**choice).resolve()
    assert variable in str(error.value)
    assert "\n" not in str(error.value)


def test_an_openai_compatible_endpoint_needs_no_key():
    settings = make_settings(llm="openai", llm_base_url="http://127.0.0.1:1/v1", llm_model="m")
    assert settings.resolve().llm == "openai"


def test_settings_come_from_mindbot_variables(monkeypatch):
    monkeypatch.setenv("MINDBOT_AUDIO__VAD_STOP_SECS", "0.35")
    monkeypatch.setenv("MINDBOT_OPENAI_API_KEY", "sk-secret")
    settings = Settings.load(_env_file=None)
    assert settings.audio.vad_stop_secs == 0.35
    assert "sk-secret" not in repr(settings)


def test_an_invalid_value_is_one_line_naming_the_variable(monkeypatch):
    monkeypatch.setenv("MINDBOT_PORT", "not-a-port")
    with pytest.raises(ConfigError) as error:
        Settings.load(_env_file=None)
    assert str(error.value).startswith("MINDBOT_PORT:")
    assert "\n" not in str(error.value)


def test_several_invalid_values_are_all_named(monkeypatch):
    monkeypatch.setenv("MINDBOT_AUDIO__VAD_CONFIDENCE", "2")
    monkeypatch.setenv("MINDBOT_TTS", "espeak")
    with pytest.raises(ConfigError) as error:
        Settings.load(_env_file=None)
    assert "MINDBOT_AUDIO__VAD_CONFIDENCE" in str(error.value)
    assert "MINDBOT_TTS" in str(error.value)


def _mindbot(args, env, cwd):
    return subprocess.run(
        [sys.executable, "-m", "mindbot", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"MINDBOT_STT": "deepgram"}, "mindbot: MINDBOT_DEEPGRAM_API_KEY is not set"),
        ({"MINDBOT_LLM_TEMPERATURE": "hot"}, "mindbot: MINDBOT_LLM_TEMPERATURE:"),
        ({"MINDBOT_LOCAL_LLM_MODEL_PATH": "/nonexistent/model.gguf"}, "/nonexistent/model.gguf"),
    ],
)
def test_mindbot_run_stops_with_one_line_on_bad_settings(tmp_path, variables, expected):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MINDBOT_")}
    env.update(variables, MINDBOT_PORT="0")
    result = _mindbot(["run"], env, tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("mindbot: ")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(expected) or expected in errors[0]
    assert "Traceback" not in result.stderr
