"""Loopback stand-ins for the paid cloud services MindBot talks to.

Each stand-in is a small local server bound to ``127.0.0.1`` on a free port that speaks the
service's *real* wire protocol (see PROTOCOLS.md), so Pipecat's real clients run against it
unchanged through their ``base_url``/``url`` settings:

- ``ScriptedLLMServer``: OpenAI chat completions (SSE streaming, tool calls, errors).
- ``DeepgramStandIn``: Deepgram live ``/v1/listen`` websocket (energy-based endpointing).
- ``CartesiaStandIn``: Cartesia ``/tts/websocket`` (synthetic speech-like PCM, contexts).
- ``DailyRESTStandIn``: Daily REST rooms and meeting tokens.
- ``TwilioRESTStandIn``: Twilio's Call-update endpoint (the serializer's hang-up).

They exist for the test suite and benchmarks; no production code path uses them. Each has
``start()``/``stop()``, works as ``async with``, and records what it received.
"""

from mindbot.standins.cartesia import CartesiaStandIn, default_synthesize
from mindbot.standins.daily import DailyRESTStandIn
from mindbot.standins.deepgram import DeepgramStandIn
from mindbot.standins.openai import (
    HttpError,
    MidStreamError,
    Reply,
    ScriptedLLMServer,
    Text,
    ToolCall,
    ToolCalls,
)
from mindbot.standins.twilio import TwilioRESTStandIn

__all__ = [
    "CartesiaStandIn",
    "DailyRESTStandIn",
    "DeepgramStandIn",
    "HttpError",
    "MidStreamError",
    "Reply",
    "ScriptedLLMServer",
    "Text",
    "ToolCall",
    "ToolCalls",
    "TwilioRESTStandIn",
    "default_synthesize",
]
