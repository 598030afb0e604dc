"""HTTP clients that share one TLS context, built once per process.

httpx builds a fresh ``ssl.SSLContext`` for every client it creates, which parses the whole CA
bundle: 12 to 20 ms of CPU on this machine, on the event loop that plays every caller's audio.
A session creates its clients while other calls are talking, so with many calls starting at
once those milliseconds add up to gaps in the other callers' audio (``mindbot bench capacity``
found them at 18 concurrent calls). The context is immutable once built and safe to share, so
the LLM's and the tools' clients take the process's one context instead.
"""

from __future__ import annotations

import functools
import ssl
from typing import Any

import httpx
from openai import AsyncOpenAI, DefaultAsyncHttpxClient
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.utils.http import connection_limits


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The process's TLS context: httpx's default (certifi's CA bundle, or ``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR`` when set), built on first use."""
    return httpx.create_ssl_context()


def http_client(**kwargs: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` on the shared TLS context; ``kwargs`` go to the client."""
    return httpx.AsyncClient(verify=tls_context(), **kwargs)


class SharedTLSOpenAILLMService(OpenAILLMService):
    """Pipecat's ``OpenAILLMService`` whose client uses the shared TLS context.

    Everything else is Pipecat's, including the connection limits its own client sets.
    """

    def create_client(
        self,
        api_key=None,
        base_url=None,
        organization=None,
        project=None,
        default_headers=None,
        **kwargs,
    ):
        """An ``AsyncOpenAI`` client like Pipecat's, on the shared TLS context."""
        return AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            organization=organization,
            project=project,
            http_client=DefaultAsyncHttpxClient(
                verify=tls_context(),
                limits=connection_limits(
                    max_keepalive_connections=100, max_connections=1000, keepalive_expiry=None
                ),
            ),
            default_headers=default_headers,
        )
