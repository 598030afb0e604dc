"""The REST API's settings: rate limits, request sizes, CORS, WebRTC tokens, batch jobs.

They live under ``Settings.api``: ``MINDBOT_API__<FIELD>`` environment variables (a list is
JSON), or the ``api:`` section of the YAML settings file::

    api:
      rate_limit_per_minute: 120
      cors_origins: ["https://dashboard.example.com"]
      webrtc_token: required
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class ApiSettings(BaseModel):
    """The REST API under ``/api/v1`` and the protections of the whole server."""

    model_config = ConfigDict(extra="forbid")

    rate_limit_per_minute: int = Field(
        default=60,
        ge=1,
        description="Requests per minute per API key (a token bucket that holds a minute's "
        "worth), unless the key has its own rate.",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest request body on any route (413 above it), uploads excepted.",
    )
    max_upload_bytes: int = Field(
        default=20 * 1024 * 1024,
        ge=1024,
        description="Largest knowledge-base upload (POST /api/v1/kb/{collection}/uploads).",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed to call the server from a browser (JSON list); empty: "
        'CORS is off. "*" allows any origin.',
    )
    webrtc_token: Literal["auto", "required", "off"] = Field(
        default="auto",
        description="Whether /start and /api/offer need a token from POST /api/v1/webrtc/token: "
        "auto requires one as soon as an API key exists.",
    )
    webrtc_token_ttl_secs: int = Field(
        default=300, ge=10, le=86400, description="How long a WebRTC token is valid."
    )
    token_secret: SecretStr | None = Field(
        default=None,
        description="Key that signs WebRTC tokens; default: random per process (set it when "
        "several server processes share the load).",
    )
    twilio_from_number: str | None = Field(
        default=None, description="The Twilio number outbound calls come from, unless given."
    )
    readiness_timeout_secs: float = Field(
        default=2.0, gt=0, le=30, description="How long /readyz waits for each check."
    )
    batch_max_questions: int = Field(
        default=100, ge=1, le=10000, description="Most questions in one batch job."
    )
    batch_max_urls: int = Field(
        default=100, ge=1, le=10000, description="Most URLs in one ingestion job."
    )
    max_concurrent_jobs: int = Field(
        default=1, ge=1, le=32, description="Background jobs run at once; the rest wait."
    )
