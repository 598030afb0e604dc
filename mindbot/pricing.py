"""The price table that turns usage (tokens, characters, audio seconds) into cost in currency.

Prices live under ``Settings.pricing`` (``MINDBOT_PRICING__*`` or the ``pricing:`` section of
the YAML settings file). A price is looked up as ``provider/model`` first, then ``provider``;
a dated model ("gpt-4.1-mini-2025-04-14") takes its family's price; usage with no price
costs nothing and is logged once, so a new model never silently inflates
or hides a bill without a trace::

    pricing:
      currency: EUR
      llm:
        openai/gpt-4.1-mini: {prompt_per_million: 0.37, completion_per_million: 1.47}
      tts: {cartesia: 36.0}      # per million characters
      stt: {deepgram: 0.0071}    # per minute of audio

Setting a service's table replaces its defaults. The defaults are the providers' public list
prices (USD, November 2026; Cartesia's from its entry plan's credits): check them against your
contract. The offline providers cost nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from loguru import logger
from pydantic import BaseModel, ConfigDict, Field


class Usage(Protocol):
    """What is priced: ``mindbot.session.UsageReport`` and ``mindbot.storage.UsageRecord``."""

    service: str
    provider: str
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    characters: int
    audio_secs: float


class TokenPrice(BaseModel):
    """An LLM's price per million tokens."""

    model_config = ConfigDict(extra="forbid")

    prompt_per_million: float = Field(ge=0, description="Price of a million input tokens.")
    completion_per_million: float = Field(ge=0, description="Price of a million output tokens.")


def _default_llm() -> dict[str, TokenPrice]:
    return {
        "openai/gpt-4.1-mini": TokenPrice(prompt_per_million=0.40, completion_per_million=1.60),
        "openai/gpt-4.1": TokenPrice(prompt_per_million=2.00, completion_per_million=8.00),
        "openai/gpt-4o-mini": TokenPrice(prompt_per_million=0.15, completion_per_million=0.60),
        "openai/gpt-4o": TokenPrice(prompt_per_million=2.50, completion_per_million=10.00),
        "local": TokenPrice(prompt_per_million=0, completion_per_million=0),
    }


class PricingSettings(BaseModel):
    """What the providers charge, for cost in analytics, metrics and ``mindbot report``."""

    model_config = ConfigDict(extra="forbid")

    currency: str = Field(
        default="USD", min_length=3, max_length=3, description="ISO 4217 code of every price."
    )
    llm: dict[str, TokenPrice] = Field(
        default_factory=_default_llm,
        description="LLM prices per million tokens, by 'provider/model' or 'provider'.",
    )
    tts: dict[str, float] = Field(
        default_factory=lambda: {"cartesia": 39.2, "piper": 0.0},
        description="TTS prices per million characters, by 'provider/model' or 'provider'.",
    )
    stt: dict[str, float] = Field(
        default_factory=lambda: {"deepgram": 0.0077, "whisper": 0.0},
        description="STT prices per minute of audio, by 'provider/model' or 'provider'.",
    )

    def cost(self, usage: Usage) -> float:
        """What one usage report costs, in ``currency``; 0 when no price is set for it."""
        table = {"llm": self.llm, "tts": self.tts, "stt": self.stt}.get(usage.service, {})
        price = _lookup(table, usage.provider, usage.model)
        if price is None:
            _warn_unpriced(usage.service, usage.provider, usage.model)
            return 0.0
        if usage.service == "llm":
            return (
                usage.prompt_tokens * price.prompt_per_million
                + usage.completion_tokens * price.completion_per_million
            ) / 1e6
        if usage.service == "tts":
            return usage.characters * price / 1e6
        return usage.audio_secs / 60 * price

    def cost_parts(self, usages: Iterable[Usage]) -> dict[str, float]:
        """The cost of many usage reports by service: ``{"llm", "tts", "stt"}``."""
        parts = {"llm": 0.0, "tts": 0.0, "stt": 0.0}
        for usage in usages:
            parts[usage.service] = parts.get(usage.service, 0.0) + self.cost(usage)
        return parts


def _lookup(table: dict, provider: str, model: str | None):
    # Providers report dated snapshots ("gpt-4.1-mini-2025-04-14"): the family's price applies.
    while model:
        if (price := table.get(f"{provider}/{model}")) is not None:
            return price
        model = model.rpartition("-")[0]
    return table.get(provider)


_warned: set[tuple[str, str, str | None]] = set()


def _warn_unpriced(service: str, provider: str, model: str | None) -> None:
    if (service, provider, model) in _warned:
        return
    _warned.add((service, provider, model))
    name = f"{provider}/{model}" if model else provider
    logger.warning(
        f"Pricing: no {service} price for {name}; its usage counts as free "
        f"(set pricing.{service} to price it)"
    )
