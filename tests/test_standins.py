"""The loopback stand-ins speak each service's real protocol: Pipecat's real clients use them."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import aiohttp
import numpy as np
import pytest
import websockets
from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    FunctionCallResultFrame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSTextFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.runner.daily import configure
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.services.cartesia.tts import CartesiaTTSService
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.llm_service import FunctionCallParams
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.transports.daily.utils import DailyRESTHelper, DailyRoomParams, DailyRoomProperties

from mindbot.standins import (
    CartesiaStandIn,
    DailyRESTStandIn,
    DeepgramStandIn,
    HttpError,
    MidStreamError,
    ScriptedLLMServer,
    Text,
    ToolCall,
    ToolCalls,
    TwilioRESTStandIn,
)
from mindbot.standins.openai import split_text

pytestmark = pytest.mark.timeout(30)

RATE = 16000


def _context(text: str = "Hi", **kwargs) -> LLMContextFrame:
    return LLMContextFrame(LLMContext(messages=[{"role": "user", "content": text}], **kwargs))


def _llm(srv: ScriptedLLMServer) -> OpenAILLMService:
    return OpenAILLMService(api_key="sk-test", base_url=srv.base_url)


def _rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0


def _speech_frames(speech_secs: float, silence_secs: float) -> list:
    """20 ms frames of a loud tone burst then silence, with small sleeps between them."""
    t = np.arange(int(RATE * 0.02)) / RATE
    tone = (6000 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()
    quiet = bytes(len(tone))
    frames: list = []
    for i in range(int(speech_secs / 0.02) + int(silence_secs / 0.02)):
        audio = tone if i < speech_secs / 0.02 else quiet
        frames += [InputAudioRawFrame(audio, RATE, 1), SleepFrame(0.002)]
    return frames


# -- OpenAI ------------------------------------------------------------------------------


def test_split_text_keeps_every_character():
    text = "  Hello there,  friend! "
    assert "".join(split_text(text)) == text
    assert split_text("Hello there.") == ["Hello", " there."]


async def test_openai_service_streams_the_scripted_text():
    async with ScriptedLLMServer() as srv:
        srv.script(Text("Hello there, how can I help?"))
        down, up = await run_test(_llm(srv), frames_to_send=[_context("Hi")])
    texts = [f.text for f in down if isinstance(f, LLMTextFrame)]
    assert len(texts) > 1
    assert "".join(texts) == "Hello there, how can I help?"
    assert not [f for f in up if isinstance(f, ErrorFrame)]
    body = srv.requests[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"][-1] == {"role": "user", "content": "Hi"}
    assert srv.headers[0]["authorization"] == "Bearer sk-test"


async def test_openai_default_reply_is_used_when_the_script_is_empty():
    async with ScriptedLLMServer(default_reply=lambda body: Text(f"{len(body)} keys")) as srv:
        down, _ = await run_test(_llm(srv), frames_to_send=[_context()])
    assert "".join(f.text for f in down if isinstance(f, LLMTextFrame)).endswith(" keys")


async def test_a_scripted_tool_call_reaches_the_direct_function():
    seen: list[tuple[str, str]] = []

    async def get_weather(params: FunctionCallParams, city: str, unit: str = "c"):
        """Get the current weather.

        Args:
            city: The city name.
            unit: "c" or "f".
        """
        seen.append((city, unit))
        await params.result_callback({"temp": 21})

    async with ScriptedLLMServer() as srv:
        srv.script(
            ToolCalls(
                [
                    ToolCall("get_weather", {"city": "Paris"}, id="call_A"),
                    ToolCall("get_weather", {"city": "Oslo", "unit": "f"}, id="call_B"),
                ]
            )
        )
        down, _ = await run_test(
            _llm(srv), frames_to_send=[_context("Weather?", tools=[get_weather])]
        )
    assert sorted(seen) == [("Oslo", "f"), ("Paris", "c")]
    results = [f for f in down if isinstance(f, FunctionCallResultFrame)]
    assert {f.tool_call_id for f in results} == {"call_A", "call_B"}
    assert srv.requests[0]["tools"][0]["function"]["name"] == "get_weather"


async def test_a_registered_handler_gets_parsed_arguments():
    calls: list[dict] = []

    async def handler(params: FunctionCallParams):
        calls.append(dict(params.arguments))
        await params.result_callback("ok")

    async with ScriptedLLMServer() as srv:
        srv.script(ToolCall("lookup", '{"query": "pipecat", "limit": 3}'))
        llm = _llm(srv)
        llm.register_function("lookup", handler)
        await run_test(llm, frames_to_send=[_context()])
    assert calls == [{"query": "pipecat", "limit": 3}]


async def test_an_http_401_becomes_an_error_frame_upstream():
    async with ScriptedLLMServer() as srv:
        srv.script(HttpError(401, "bad key", code="invalid_api_key"))
        down, up = await run_test(_llm(srv), frames_to_send=[_context()])
    errors = [f for f in up if isinstance(f, ErrorFrame)]
    assert len(errors) == 1 and "401" in errors[0].error and "bad key" in errors[0].error
    assert not [f for f in down if isinstance(f, LLMTextFrame)]
    assert len(srv.requests) == 1


async def test_a_500_is_retried_by_the_sdk_so_it_takes_three_replies():
    async with ScriptedLLMServer() as srv:
        srv.script(*[HttpError(500, "down", type="server_error", retry_after=0.01)] * 3)
        srv.script(Text("never reached"))
        _, up = await run_test(_llm(srv), frames_to_send=[_context()])
    assert len(srv.requests) == 3
    assert [h["x-stainless-retry-count"] for h in srv.headers] == ["0", "1", "2"]
    assert any("500" in f.error for f in up if isinstance(f, ErrorFrame))
    assert srv.pending == 1


async def test_a_mid_stream_error_keeps_the_text_and_reports_the_error():
    async with ScriptedLLMServer() as srv:
        srv.script(MidStreamError("overloaded", after_text="Partial answer"))
        down, up = await run_test(_llm(srv), frames_to_send=[_context()])
    assert "".join(f.text for f in down if isinstance(f, LLMTextFrame)) == "Partial answer"
    assert any("overloaded" in f.error for f in up if isinstance(f, ErrorFrame))


async def test_openai_raw_http_shapes_and_bad_input():
    async with ScriptedLLMServer(api_key="sk-good") as srv, aiohttp.ClientSession() as http:
        url = f"{srv.base_url}/chat/completions"
        auth = {"Authorization": "Bearer sk-good"}
        async with http.post(url, data=b"{not json", headers=auth) as r:
            assert r.status == 400
            assert set((await r.json())["error"]) == {"message", "type", "param", "code"}
        async with http.post(url, json={"messages": []}) as r:
            assert r.status == 401
            assert (await r.json())["error"]["code"] == "invalid_api_key"
        srv.script(ToolCall("f", {"a": 1}, id="call_1"))
        async with http.post(url, json={"model": "m", "messages": []}, headers=auth) as r:
            body = await r.json()
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["finish_reason"] == "tool_calls"
        call = body["choices"][0]["message"]["tool_calls"][0]
        assert call["id"] == "call_1" and json.loads(call["function"]["arguments"]) == {"a": 1}
        assert body["usage"]["total_tokens"] > 0
        srv.script(ToolCalls([ToolCall("f", {"a": 1}), ToolCall("g", {})], text="Hm."))
        payload = {"model": "m", "messages": [], "stream": True}
        async with http.post(url, json=payload, headers=auth) as r:
            raw = (await r.read()).decode()
        events = [e[len("data: ") :] for e in raw.split("\n\n") if e]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
        calls = [d["tool_calls"] for d in deltas if "tool_calls" in d]
        assert all(len(c) == 1 for c in calls)
        assert [c[0]["index"] for c in calls if "id" in c[0]] == [0, 1]
        assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
        assert "usage" not in chunks[-1]
        async with http.get(f"{srv.base_url}/models", headers=auth) as r:
            assert (await r.json())["data"][0]["id"] == "scripted"
        async with http.get(f"{srv.base_url}/nope", headers=auth) as r:
            assert r.status == 404 and "message" in (await r.json())["error"]


async def test_openai_survives_a_crashing_default_reply():
    async with ScriptedLLMServer(default_reply=lambda body: 1 / 0) as srv:
        srv.script(Text("fine"))
        async with aiohttp.ClientSession() as http:
            url = f"{srv.base_url}/chat/completions"
            async with http.post(url, json={"messages": []}) as r:
                assert (await r.json())["choices"][0]["message"]["content"] == "fine"
            async with http.post(url, json={"messages": []}) as r:
                assert r.status == 500 and (await r.json())["error"]["type"] == "server_error"
            async with http.post(url, json={"messages": "not a list"}) as r:
                assert r.status == 400 and (await r.json())["error"]["param"] == "messages"


async def test_openai_paces_tokens_and_stop_cuts_a_slow_stream():
    async with ScriptedLLMServer(first_token_delay=0.1, token_delay=0.05) as srv:
        async with aiohttp.ClientSession() as http:
            payload = {"model": "m", "messages": [], "stream": True}
            started = time.monotonic()
            async with http.post(f"{srv.base_url}/chat/completions", json=payload) as r:
                await r.read()
            assert time.monotonic() - started >= 0.1 + 2 * 0.05  # "I heard you." = 3 pieces
            srv.script(Text("word " * 200))
            async with http.post(f"{srv.base_url}/chat/completions", json=payload) as r:
                await r.content.readline()
                started = time.monotonic()
                await srv.stop()
                assert time.monotonic() - started < 1.5
                with pytest.raises(aiohttp.ClientError):
                    await r.read()


# -- Deepgram ----------------------------------------------------------------------------


async def test_deepgram_service_transcribes_a_tone_burst_on_endpointing():
    async with DeepgramStandIn(transcripts=["what is the weather"], final_delay=0.05) as srv:
        stt = DeepgramSTTService(api_key="x", base_url=srv.url)
        frames = _speech_frames(0.6, 0.5) + [SleepFrame(0.3)]
        down, up = await run_test(stt, frames_to_send=frames)
    finals = [f for f in down if isinstance(f, TranscriptionFrame)]
    interims = [f for f in down if isinstance(f, InterimTranscriptionFrame)]
    assert [f.text for f in finals] == ["what is the weather"]
    assert [f.text for f in interims] == ["what is"]
    assert finals[0].result.speech_final is True and not finals[0].result.from_finalize
    assert not [f for f in up if isinstance(f, ErrorFrame)]
    conn = srv.connections[0]
    assert conn["path"] == "/v1/listen" and conn["query"]["sample_rate"] == ["16000"]
    assert conn["headers"]["authorization"] == "Token x"
    assert srv.audio_bytes == 55 * 640


async def test_deepgram_finalize_answers_with_from_finalize():
    settings = DeepgramSTTService.Settings(endpointing=False)
    async with DeepgramStandIn(transcriber=lambda pcm, rate: f"{len(pcm) // 2} samples") as srv:
        stt = DeepgramSTTService(api_key="x", base_url=srv.url, settings=settings)
        frames = _speech_frames(0.4, 0.4) + [VADUserStoppedSpeakingFrame(), SleepFrame(0.3)]
        down, _ = await run_test(stt, frames_to_send=frames)
    finals = [f for f in down if isinstance(f, TranscriptionFrame)]
    assert len(finals) == 1 and finals[0].result.from_finalize is True
    assert finals[0].text == f"{40 * 320} samples"
    assert {"type": "Finalize"} in srv.control_messages


async def test_deepgram_rejects_a_bad_key_and_the_service_reports_it():
    async with DeepgramStandIn(api_key="right") as srv:
        stt = DeepgramSTTService(api_key="wrong", base_url=srv.url)
        _, up = await run_test(stt, frames_to_send=[SleepFrame(0.1)])
    assert any("401" in f.error for f in up if isinstance(f, ErrorFrame))
    assert srv.connections == []


async def test_deepgram_close_all_reaches_the_service_as_an_error():
    async with DeepgramStandIn() as srv:
        stt = DeepgramSTTService(api_key="x", base_url=srv.url)

        async def drop_soon():
            await asyncio.sleep(0.3)
            await srv.close_all(code=1011, reason="boom")

        dropper = asyncio.create_task(drop_soon())
        _, up = await run_test(stt, frames_to_send=[SleepFrame(0.6)])
        await dropper
    assert any("1011" in f.error for f in up if isinstance(f, ErrorFrame))


async def test_deepgram_raw_protocol_and_bad_input():
    async with DeepgramStandIn(language="es") as srv:
        url = f"{srv.url}/v1/listen?encoding=linear16&sample_rate=16000"
        async with websockets.connect(url) as ws:
            await ws.send("{oops")
            error = json.loads(await ws.recv())
            assert error["type"] == "Error"
            await ws.send(json.dumps({"type": "Finalize"}))
            empty = json.loads(await ws.recv())
            assert empty["is_final"] and empty["from_finalize"]
            assert empty["channel"]["alternatives"][0]["transcript"] == ""
            loud = (np.full(RATE // 2, 3000)).astype("<i2").tobytes()
            await ws.send(loud)
            await ws.send(json.dumps({"type": "KeepAlive"}))
            await ws.send(json.dumps({"type": "CloseStream"}))
            final = json.loads(await ws.recv())
            assert final["channel"]["alternatives"][0]["transcript"] == "hello"
            assert final["channel"]["alternatives"][0]["languages"] == ["es"]
            assert json.loads(await ws.recv())["type"] == "Metadata"
            with pytest.raises(websockets.ConnectionClosedOK):
                await ws.recv()
            assert ws.close_code == 1000
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(f"{srv.url}/v1/listen?encoding=mulaw")


# -- Cartesia ----------------------------------------------------------------------------


async def test_cartesia_service_speaks_non_silent_audio():
    async with CartesiaStandIn() as srv:
        tts = CartesiaTTSService(
            api_key="x", url=srv.url, settings=CartesiaTTSService.Settings(voice="v")
        )
        down, up = await run_test(
            tts, frames_to_send=[TTSSpeakFrame("Hello there friend."), SleepFrame(1.0)]
        )
    audio = b"".join(f.audio for f in down if isinstance(f, TTSAudioRawFrame))
    assert len(audio) > 24000 * 2 * 0.5
    assert _rms(audio) > 1000
    words = [f.text for f in down if isinstance(f, TTSTextFrame)]
    assert words == ["Hello", "there", "friend."]
    assert not [f for f in up if isinstance(f, ErrorFrame)]
    first = srv.requests[0]
    assert first["transcript"] == "Hello there friend." and first["voice"]["id"] == "v"
    assert first["output_format"]["sample_rate"] == 24000
    assert srv.connections[0]["headers"]["x-api-key"] == "x"


async def test_cartesia_service_cancels_the_context_on_interruption():
    async with CartesiaStandIn() as srv:
        tts = CartesiaTTSService(
            api_key="x", url=srv.url, settings=CartesiaTTSService.Settings(voice="v")
        )
        long_text = "This sentence is long enough to take several seconds of audio to speak."
        frames = [TTSSpeakFrame(long_text), SleepFrame(0.3), InterruptionFrame(), SleepFrame(0.3)]
        down, _ = await run_test(tts, frames_to_send=frames)
    context_id = srv.requests[0]["context_id"]
    assert srv.cancelled == [context_id]
    audio = b"".join(f.audio for f in down if isinstance(f, TTSAudioRawFrame))
    assert 0 < len(audio) < 24000 * 2 * 3  # well short of the ~5 s the text would take


async def _recv_json(ws, timeout: float = 2.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def test_cartesia_raw_protocol_cancel_and_bad_input():
    fmt = {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 16000}
    async with CartesiaStandIn() as srv, websockets.connect(srv.url) as ws:
        await ws.send("not json")
        error = await _recv_json(ws)
        assert error["type"] == "error" and "context_id" not in error
        await ws.send(json.dumps({"transcript": "hi", "output_format": fmt}))
        assert (await _recv_json(ws))["type"] == "error"
        await ws.send(json.dumps({"transcript": "hi", "context_id": "c0", "output_format": {}}))
        assert (await _recv_json(ws))["context_id"] == "c0"

        msg = {"context_id": "c1", "continue": False, "output_format": fmt}
        await ws.send(json.dumps({**msg, "transcript": "Short one.", "add_timestamps": True}))
        kinds = []
        while not kinds or kinds[-1] != "done":
            reply = await _recv_json(ws)
            assert reply["context_id"] == "c1"
            kinds.append(reply["type"])
        assert set(kinds[:-2]) == {"chunk"} and kinds[-2:] == ["timestamps", "done"]

        long_text = "This sentence is long enough to take several seconds of audio to speak."
        await ws.send(json.dumps({**msg, "context_id": "c2", "transcript": long_text}))
        assert (await _recv_json(ws))["type"] == "chunk"
        await ws.send(json.dumps({"context_id": "c2", "cancel": True}))
        late: list[dict] = []
        while len(late) < 20:  # only what was already in flight may still arrive
            try:
                late.append(await _recv_json(ws, timeout=0.3))
            except TimeoutError:
                break
        assert len(late) < 5 and all(m["type"] == "chunk" for m in late)
        assert srv.cancelled == ["c2"]
        await ws.send(json.dumps({**msg, "context_id": "c3", "transcript": "Still alive."}))
        assert (await _recv_json(ws))["context_id"] == "c3"


async def test_cartesia_rejects_a_bad_key():
    async with CartesiaStandIn(api_key="right") as srv:
        with pytest.raises(websockets.InvalidStatus) as info:
            await websockets.connect(srv.url, additional_headers={"X-API-Key": "wrong"})
        assert info.value.response.status_code == 401


# -- Daily -------------------------------------------------------------------------------


async def test_daily_rest_helper_creates_a_room_and_a_token():
    async with DailyRESTStandIn() as srv, aiohttp.ClientSession() as http:
        helper = DailyRESTHelper(daily_api_key="k", daily_api_url=srv.api_url, aiohttp_session=http)
        params = DailyRoomParams(properties=DailyRoomProperties(exp=time.time() + 60))
        room = await helper.create_room(params)
        assert room.name.startswith("mindbot-") and room.url.endswith(f"/{room.name}")
        token = await helper.get_token(room.url, expiry_time=60)
        assert token and srv.tokens[0]["room_name"] == room.name
        assert (await helper.get_room_from_url(room.url)).id == room.id
        assert await helper.delete_room_by_url(room.url)
        with pytest.raises(Exception, match="Room not found"):
            await helper.get_room_from_url(room.url)
        assert [(m, p) for m, p, _ in srv.requests][:2] == [
            ("POST", "/v1/rooms"),
            ("POST", "/v1/meeting-tokens"),
        ]
        async with http.post(f"{srv.api_url}/rooms", json={}) as r:
            assert r.status == 401
        auth = {"Authorization": "Bearer k"}
        async with http.post(f"{srv.api_url}/rooms", data=b"{", headers=auth) as r:
            assert r.status == 400 and (await r.json())["error"] == "invalid-request-error"
        async with http.post(f"{srv.api_url}/meeting-tokens", json={}, headers=auth) as r:
            assert r.status == 400
        async with http.get(f"{srv.api_url}/rooms/nope", headers=auth) as r:
            assert r.status == 404 and (await r.json())["error"] == "not-found"
    assert len(srv.rooms) == 1


async def test_the_runner_configure_creates_a_sip_room(monkeypatch: pytest.MonkeyPatch):
    async with DailyRESTStandIn(api_key="k") as srv, aiohttp.ClientSession() as http:
        monkeypatch.setenv("DAILY_API_URL", srv.api_url)
        monkeypatch.delenv("DAILY_ROOM_URL", raising=False)
        config = await configure(http, api_key="k", sip_caller_phone="+15555550100")
    room = srv.rooms[0]
    assert room["name"].startswith("pipecat-telephony-")
    assert config.room_url == room["url"] and config.token
    assert config.sip_endpoint == f"sip:{room['name']}@sip.mindbot-test.daily.co"
    assert room["config"]["sip"]["display_name"] == "+15555550100"


# -- Twilio ------------------------------------------------------------------------------


def _serializer(srv: TwilioRESTStandIn, call_sid: str, token: str = "tok"):
    return TwilioFrameSerializer(
        stream_sid="MZ1", call_sid=call_sid, account_sid="AC1", auth_token=token,
        base_url=srv.base_url,
    )  # fmt: skip


async def test_twilio_serializer_hangs_up_against_the_stand_in():
    async with TwilioRESTStandIn(account_sid="AC1", auth_token="tok") as srv:
        await _serializer(srv, "CA1").serialize(EndFrame())
        assert srv.hangups == [("CA1", {"Status": "completed"})]
        await _serializer(srv, "CA2", token="wrong").serialize(EndFrame())
        srv.mark_ended("CA3")
        await _serializer(srv, "CA3").serialize(EndFrame())
        assert [sid for sid, _ in srv.hangups] == ["CA1"]
        async with aiohttp.ClientSession() as http:
            url = f"{srv.base_url}/2010-04-01/Accounts/AC1/Calls/CA1.json"
            async with http.post(url, data={"Status": "completed"}) as r:
                assert r.status == 401 and (await r.json())["code"] == 20003
            auth = {"Authorization": "Basic " + base64.b64encode(b"AC1:tok").decode()}
            async with http.post(url, data={"Status": "completed"}, headers=auth) as r:
                assert r.status == 404 and (await r.json())["code"] == 20404
            url4 = url.replace("CA1", "CA4")
            async with http.post(url4, data=b"\xff", headers={**auth, "Content-Type": "x/y"}) as r:
                assert r.status == 400
            async with http.post(url4, data={"Status": "bogus"}, headers=auth) as r:
                assert r.status == 400
            async with http.post(url4, data={"Status": "completed"}, headers=auth) as r:
                assert r.status == 200 and (await r.json())["status"] == "completed"
        assert [sid for sid, _ in srv.hangups] == ["CA1", "CA4"]


# -- Lifecycle ---------------------------------------------------------------------------


async def test_stop_closes_open_connections_quickly():
    srv = await DeepgramStandIn().start()
    ws = await websockets.connect(f"{srv.url}/v1/listen?sample_rate=16000")
    started = time.monotonic()
    await srv.stop()
    assert time.monotonic() - started < 3
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 2)
    assert not srv.started


async def test_close_all_drops_connections_with_the_given_code():
    async with CartesiaStandIn() as srv, websockets.connect(srv.url) as ws:
        await srv.close_all(code=1011, reason="boom")
        with pytest.raises(websockets.ConnectionClosedError):
            await asyncio.wait_for(ws.recv(), 2)
        assert ws.close_code == 1011


async def test_chunks_are_base64_pcm_at_the_requested_rate():
    fmt = {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 8000}
    async with CartesiaStandIn() as srv, websockets.connect(srv.url) as ws:
        await ws.send(json.dumps({"context_id": "a", "transcript": "Hey.", "output_format": fmt}))
        chunk = await _recv_json(ws)
    assert len(base64.b64decode(chunk["data"])) == 8000 * 2 * 40 // 1000
