"""The server's set-up for many calls: one TLS context for the LLM's and the tools' HTTPS, no
per-message compression on the voice websocket, and a frozen start-up heap."""

import datetime
import gc
import ipaddress
import ssl
import weakref

import certifi
import httpx
import pytest
import websockets
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mindbot.clients import SharedTLSOpenAILLMService, http_client, tls_context
from mindbot.harness import serve, ws_url
from mindbot.server import freeze_heap
from pipelines.assistant import run

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "private-model",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from behind the private CA."},
            "finish_reason": "stop",
        }
    ],
}


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, key, issuer: str, signer, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture
def private_ca(tmp_path, monkeypatch):
    """A private CA in ``SSL_CERT_FILE`` and an HTTPS OpenAI-style endpoint signed by it.

    Yields the server's SSL context; the process's TLS context is rebuilt before and after.
    """
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("MindBot test CA", ca_key, "MindBot test CA", ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _certificate("127.0.0.1", key, "MindBot test CA", ca_key, ca=False)
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "leaf.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    tls_context.cache_clear()
    yield server_tls
    tls_context.cache_clear()


@pytest.fixture
async def https_endpoint(private_ca):
    """An HTTPS server on loopback answering chat completions and ``GET /ping``."""

    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        assert body["model"] == "private-model"
        return web.json_response(COMPLETION)

    async def ping(_request: web.Request) -> web.Response:
        return web.Response(text="pong")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/ping", ping)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=private_ca)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"https://127.0.0.1:{port}"
    await runner.cleanup()


async def test_the_llm_and_tools_clients_verify_https_with_the_process_tls_context(
    https_endpoint,
):
    service = SharedTLSOpenAILLMService(api_key="sk-test", base_url=f"{https_endpoint}/v1")
    client = service.create_client(api_key="sk-test", base_url=f"{https_endpoint}/v1")
    completion = await client.chat.completions.create(
        model="private-model", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].message.content == "Hello from behind the private CA."

    async with http_client(timeout=5) as http:
        assert (await http.get(f"{https_endpoint}/ping")).text == "pong"

    # A context with only the public CAs refuses the same server: the private CA is what let
    # the clients above in.
    public = ssl.create_default_context(cafile=certifi.where())
    async with httpx.AsyncClient(verify=public, timeout=5) as plain:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await plain.get(f"{https_endpoint}/ping")


def test_every_client_shares_one_context_built_once():
    # httpx would otherwise parse the CA bundle again for each client, on the event loop.
    first = http_client()
    second = SharedTLSOpenAILLMService(api_key="sk-test").create_client(api_key="sk-test")
    assert tls_context() is tls_context()
    assert first._transport._pool._ssl_context is tls_context()
    assert second._client._transport._pool._ssl_context is tls_context()


async def test_the_voice_server_declines_per_message_compression(offline_bot):
    async with serve(offline_bot, run) as base_url:
        async with websockets.connect(ws_url(base_url), compression="deflate") as ws:
            assert ws.response.headers.get("Sec-WebSocket-Extensions") is None


def test_freezing_the_heap_keeps_live_objects_and_frees_garbage():
    class Node:
        pass

    garbage, live = Node(), Node()
    garbage.self = garbage  # a cycle only the collector frees
    live.self = live
    dead = weakref.ref(garbage)
    del garbage
    frozen_before = gc.get_freeze_count()
    try:
        freeze_heap()
        assert dead() is None
        assert gc.get_freeze_count() > frozen_before
        assert live.self is live
    finally:
        gc.unfreeze()  # the rest of the test run collects as usual
