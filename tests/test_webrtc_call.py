"""A real WebRTC peer (aiortc) talks with the assistant through SmallWebRTC signalling.

The same flow as Pipecat's prebuilt browser client: ``POST /start`` then an SDP offer to
``/sessions/{id}/api/offer``; audio flows both ways over a real peer connection on loopback.
"""

import asyncio
import fractions
import time

import av
import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription

from mindbot.audio import resample
from mindbot.harness import serve
from mindbot.speech import synthesize
from mindbot.standins import Text
from pipelines.assistant import run

from conftest import wait_until

RATE = 48000
FRAME = 960  # 20 ms


class Microphone(MediaStreamTrack):
    """An audio track that plays queued PCM in real time, and silence otherwise."""

    kind = "audio"

    def __init__(self):
        super().__init__()
        self._pending = bytearray()
        self._pts = 0
        self._start = None

    def play(self, pcm: bytes, rate: int) -> None:
        self._pending += resample(pcm, rate, RATE)

    async def recv(self):
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._pts / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        chunk = bytes(self._pending[: FRAME * 2]).ljust(FRAME * 2, b"\x00")
        del self._pending[: FRAME * 2]
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(chunk)
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self._pts += FRAME
        return frame


async def _listen(track, heard: list[tuple[float, float]]):
    while True:
        frame = await track.recv()
        samples = frame.to_ndarray().astype(np.float32)
        heard.append((time.monotonic(), float(np.sqrt(np.mean(samples**2)))))


class Peer:
    """A browser-like peer in a WebRTC session with a served MindBot: a microphone to play
    into, and the loudness (RMS) of every 20 ms of the bot's audio, with when it arrived."""

    def __init__(self):
        self.pc = RTCPeerConnection()
        self.microphone = Microphone()
        self.pc.addTrack(self.microphone)
        self.heard: list[tuple[float, float]] = []
        self._listeners: list[asyncio.Task] = []
        self.pc.on("track", self._on_track)

    def _on_track(self, track) -> None:
        self._listeners.append(asyncio.create_task(_listen(track, self.heard)))

    async def connect(self, http: httpx.AsyncClient, body: dict) -> None:
        """Start a session (``POST /start``) and negotiate it, as Pipecat's client does."""
        start = await http.post("/start", json={"body": body})
        session_id = start.json()["sessionId"]
        await self.pc.setLocalDescription(await self.pc.createOffer())
        answer = await http.post(
            f"/sessions/{session_id}/api/offer",
            json={"sdp": self.pc.localDescription.sdp, "type": self.pc.localDescription.type},
        )
        assert answer.status_code == 200, answer.text
        reply = answer.json()
        await self.pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], reply["type"]))

    async def ask_after_greeting(self, question: bytes, rate: int, llm) -> float:
        """Wait out the greeting, ask ``question``, and wait until the bot has answered for
        a second. Returns when the question was played."""
        await wait_until(lambda: any(rms > 300 for _, rms in self.heard), timeout=20)
        await asyncio.sleep(3.5)  # let the greeting finish
        self.microphone.play(question, rate)
        asked = time.monotonic()
        await wait_until(lambda: len(llm.requests) >= 1, timeout=20)
        await wait_until(
            lambda: any(at > asked + 1.0 and rms > 300 for at, rms in self.heard), timeout=20
        )
        return asked

    async def close(self) -> None:
        for task in self._listeners:
            task.cancel()
        await self.pc.close()


async def test_a_webrtc_peer_is_greeted_and_answered(cloud_services, voice_cache):
    cloud_services.llm.script(Text("Paris is the capital of France."))
    question, rate = synthesize("What is the capital of France?", cache_dir=voice_cache)
    bot = cloud_services.bot()
    seen_calls = []
    bot.listeners.append(type("L", (), {"on_session_started": lambda _, c: seen_calls.append(c)})())
    peer = Peer()
    try:
        async with serve(bot, run) as base_url, httpx.AsyncClient(base_url=base_url) as http:
            await peer.connect(http, {"user_id": "web-user-7"})
            await peer.ask_after_greeting(question, rate, cloud_services.llm)
            await peer.pc.close()
            await wait_until(lambda: not bot.active_sessions, timeout=20)
    finally:
        await peer.close()
        bot.stop()

    assert seen_calls[0].transport == "webrtc" and seen_calls[0].user_id == "web-user-7"
    user = [m["content"] for m in cloud_services.llm.requests[0]["messages"] if m["role"] == "user"]
    assert "capital of france" in user[-1].lower()


async def test_a_throat_clear_over_the_bot_pauses_it_and_it_goes_on(cloud_services, voice_cache):
    """The barge-in pause on WebRTC: the bot's audio stops within a few tenths of a second
    of a sound Pipecat's VAD does not take for speech (its start time set longer than the
    sound), and goes on once the sound is over."""
    from mindbot.command_bench import LONG_REPLY, QUESTION
    from mindbot.falsebargein_bench import load_sounds

    cloud_services.llm.script(Text(LONG_REPLY))
    question, rate = synthesize(QUESTION, cache_dir=voice_cache)
    (throat_clear,) = await load_sounds(["throat_clear"])
    bot = cloud_services.bot(audio={"vad_start_secs": 0.6})
    outcomes: list[tuple[float, str]] = []
    listener = {"on_barge_in_pause": lambda _, _call, o: outcomes.append((time.monotonic(), o))}
    bot.listeners.append(type("L", (), listener)())
    peer = Peer()
    try:
        async with serve(bot, run) as base_url, httpx.AsyncClient(base_url=base_url) as http:
            await peer.connect(http, {})
            await peer.ask_after_greeting(question, rate, cloud_services.llm)
            await asyncio.sleep(1.0)  # well into the long answer
            cloud_services.deepgram.speech_threshold = float("inf")  # no words in the sound
            peer.microphone.play(throat_clear.pcm, 8000)
            played = time.monotonic()
            await wait_until(lambda: outcomes, timeout=10)
            await asyncio.sleep(1.0)
    finally:
        await peer.close()
        bot.stop()

    (ended, outcome), *_ = outcomes
    assert outcome == "resumed", outcomes
    # Silence while paused, the bot's voice again after it (the answer is far longer).
    paused = [rms for at, rms in peer.heard if played + 0.4 < at < ended - 0.05]
    assert paused and max(paused) < 300, paused
    assert any(at > ended + 0.1 and rms > 300 for at, rms in peer.heard)
    assert len(cloud_services.llm.requests) == 1  # the sound was no turn
