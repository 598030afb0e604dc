"""API keys, scopes and rate limits; body limits and CORS; /healthz and /readyz; Twilio's
request signature; the WebRTC start tokens; ``mindbot keys``. Real HTTP on loopback."""

from __future__ import annotations

from api_helpers import api_client, new_key

from mindbot.api.auth import WebRTCTokens, parse_scopes
from mindbot.api.twilio import twilio_signature, valid_twilio_signature
from mindbot.harness import free_port
from mindbot.runtime import MindBot

from conftest import make_settings, mindbot

TWILIO_TOKEN = "tw-auth-token"


async def test_a_key_needs_to_be_known_unrevoked_and_scoped(cloud_services):
    bot = cloud_services.bot()
    try:
        reader = new_key(bot, ["read"], name="dashboard")
        writer = new_key(bot, ["write"], name="crm")
        async with api_client(bot) as client:
            missing = await client.get("/api/v1/personas")
            assert missing.status_code == 401
            assert "Missing API key" in missing.json()["detail"]
            assert missing.headers["www-authenticate"] == "Bearer"
            basic = await client.get("/api/v1/personas", headers={"Authorization": "Basic eDp5"})
            assert basic.status_code == 401
            wrong = await client.get(
                "/api/v1/personas", headers={"Authorization": "Bearer mb_not-a-real-key"}
            )
            assert (wrong.status_code, wrong.json()) == (401, {"detail": "Invalid API key"})

            personas = await client.get("/api/v1/personas", headers=reader)
            assert personas.status_code == 200
            assert "receptionist" in {p["name"] for p in personas.json()}
            refused = await client.post("/api/v1/webrtc/token", headers=reader)
            assert refused.status_code == 403 and "'write' scope" in refused.json()["detail"]
            # write includes read
            assert (await client.get("/api/v1/tools", headers=writer)).status_code == 200
            admin_only = await client.get("/api/v1/audit", headers=writer)
            assert admin_only.status_code == 403

            (crm,) = [k for k in bot.storage.api_keys() if k.name == "crm"]
            assert crm.last_used_at is not None
            bot.storage.revoke_api_key(crm.id)
            revoked = await client.get("/api/v1/tools", headers=writer)
            assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
    finally:
        bot.stop()


async def test_a_burst_past_a_keys_rate_gets_429_with_retry_after(cloud_services):
    bot = cloud_services.bot()
    try:
        limited = new_key(bot, ["read"], rate=3)
        other = new_key(bot, ["read"])
        async with api_client(bot) as client:
            codes = [
                (await client.get("/api/v1/tools", headers=limited)).status_code for _ in range(3)
            ]
            assert codes == [200, 200, 200]
            over = await client.get("/api/v1/tools", headers=limited)
            assert over.status_code == 429
            assert 1 <= int(over.headers["retry-after"]) <= 20  # one token per 20 s
            assert "retry in" in over.json()["detail"]
            # Other keys have their own bucket; the server is still up.
            assert (await client.get("/api/v1/tools", headers=other)).status_code == 200
            assert (await client.get("/healthz")).json() == {"status": "ok", "active_sessions": 0}
    finally:
        bot.stop()


async def test_bad_bodies_get_clear_errors_and_the_server_stays_up(cloud_services):
    bot = cloud_services.bot(api={"max_body_bytes": 4096})
    try:
        key = new_key(bot, ["read"])
        async with api_client(bot) as client:
            big = b'{"identity": "' + b"x" * 10_000 + b'"}'
            declared = await client.post("/api/v1/users/lookup", content=big, headers=key)
            assert declared.status_code == 413 and "4096 bytes" in declared.json()["detail"]

            async def chunks():  # no Content-Length: counted as it arrives
                for _ in range(10):
                    yield b" " * 1000

            streamed = await client.post("/api/v1/users/lookup", content=chunks(), headers=key)
            assert streamed.status_code == 413
            voice = await client.post("/start", content=big)  # the voice routes too
            assert voice.status_code == 413

            malformed = await client.post(
                "/api/v1/users/lookup",
                content=b'{"identity": ',
                headers={**key, "Content-Type": "application/json"},
            )
            assert malformed.status_code == 422
            assert malformed.json()["detail"][0]["type"] == "json_invalid"
            wrong_type = await client.post(
                "/api/v1/users/lookup", json={"identity": ["a"]}, headers=key
            )
            assert wrong_type.status_code == 422
            assert wrong_type.json()["detail"][0]["loc"] == ["body", "identity"]
            extra = await client.post(
                "/api/v1/users/lookup", json={"identity": "a", "admin": True}, headers=key
            )
            assert extra.status_code == 422
            bad_query = await client.get("/api/v1/sessions?limit=0", headers=key)
            assert bad_query.status_code == 422
            unknown = await client.get("/api/v1/sessions/no-such-session", headers=key)
            assert (unknown.status_code, unknown.json()) == (404, {"detail": "No such session"})
            assert (await client.get("/healthz")).status_code == 200
    finally:
        bot.stop()


async def test_cors_is_off_by_default_and_allows_only_configured_origins(cloud_services):
    preflight = {"Origin": "https://dash.example", "Access-Control-Request-Method": "GET"}
    bot = cloud_services.bot()
    try:
        async with api_client(bot) as client:
            off = await client.options("/api/v1/personas", headers=preflight)
            assert "access-control-allow-origin" not in off.headers
    finally:
        bot.stop()
    bot = cloud_services.bot(api={"cors_origins": ["https://dash.example"]})
    try:
        async with api_client(bot) as client:
            on = await client.options("/api/v1/personas", headers=preflight)
            assert on.headers["access-control-allow-origin"] == "https://dash.example"
            elsewhere = await client.options(
                "/api/v1/personas", headers={**preflight, "Origin": "https://evil.example"}
            )
            assert "access-control-allow-origin" not in elsewhere.headers
    finally:
        bot.stop()


async def test_readyz_reports_each_check_and_503_when_a_provider_is_down(cloud_services):
    bot = cloud_services.bot()
    try:
        async with api_client(bot) as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["status"] == "ready"
            checks = ready.json()["checks"]
            assert checks["database"] == {"ok": True, "detail": "writable"}
            assert checks["models"]["ok"] and checks["local_llm"]["detail"] == "not used"
            assert checks["stt"]["detail"] == "127.0.0.1 reachable"
            assert checks["llm"]["ok"] and checks["tts"]["ok"]
            assert checks["twilio"]["detail"] == "not configured"
    finally:
        bot.stop()
    settings = {**cloud_services.settings, "cartesia_url": f"ws://127.0.0.1:{free_port()}/tts"}
    bot = MindBot(make_settings(**settings))
    bot.start()
    try:
        async with api_client(bot) as client:
            down = await client.get("/readyz")
            assert down.status_code == 503 and down.json()["status"] == "not ready"
            assert down.json()["checks"]["tts"]["ok"] is False
            assert down.json()["checks"]["stt"]["ok"] is True
            assert (await client.get("/healthz")).status_code == 200  # alive, not ready
    finally:
        bot.stop()


def test_the_twilio_signature_matches_twilios_documented_example():
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    signature = twilio_signature("12345", url, params.items())
    assert (
        signature
        == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        == twilio_signature("12345", url, reversed(params.items()))
    )
    assert valid_twilio_signature("12345", signature, [url], params.items())
    with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
    assert valid_twilio_signature("12345", signature, [with_port], params.items())
    assert not valid_twilio_signature("12346", signature, [url], params.items())
    assert not valid_twilio_signature("12345", signature, [url], {**params, "Digits": "1"}.items())
    assert not valid_twilio_signature("12345", None, [url], params.items())


async def test_the_twilio_webhook_checks_the_signature_when_a_token_is_set(cloud_services):
    bot = cloud_services.bot(
        public_url="https://bot.example.com",
        twilio_account_sid="AC" + "1" * 32,
        twilio_auth_token=TWILIO_TOKEN,
    )
    form = {"CallSid": "CA1", "From": "+15550100009", "To": "+15550100001"}
    signed_url = "https://bot.example.com/twilio"

    def signed(url: str, params: dict) -> dict:
        return {"X-Twilio-Signature": twilio_signature(TWILIO_TOKEN, url, params.items())}

    try:
        async with api_client(bot) as client:
            good = await client.post("/twilio", data=form, headers=signed(signed_url, form))
            assert good.status_code == 200 and "<Stream" in good.text
            tampered = await client.post(
                "/twilio", data={**form, "From": "+15550100666"}, headers=signed(signed_url, form)
            )
            assert tampered.status_code == 403
            other_url = signed("https://evil.example.com/twilio", form)
            assert (await client.post("/twilio", data=form, headers=other_url)).status_code == 403
            assert (await client.post("/twilio", data=form)).status_code == 403
    finally:
        bot.stop()


def test_webrtc_tokens_expire_and_cannot_be_forged():
    now = [1_000_000.0]
    tokens = WebRTCTokens(b"k" * 32, ttl_secs=60, clock=lambda: now[0])
    token, expires = tokens.issue(key_id=7)
    assert expires == 1_000_060 and tokens.verify(token)
    assert not WebRTCTokens(b"x" * 32, ttl_secs=60, clock=lambda: now[0]).verify(token)
    version, payload, signature = token.split(".")
    assert not tokens.verify(f"{version}.{payload}x.{signature}")
    assert not tokens.verify("garbage") and not tokens.verify("v1..")
    now[0] += 61
    assert not tokens.verify(token)


async def test_webrtc_starts_need_a_token_once_api_keys_exist(cloud_services):
    bot = cloud_services.bot()
    try:
        async with api_client(bot) as client:
            before = await client.post("/start", json={"transport": "webrtc"})
            assert before.status_code == 200  # no keys yet: the browser client works as is
            key = new_key(bot, ["write"])
            refused = await client.post("/start", json={"transport": "webrtc"})
            assert refused.status_code == 401 and "/api/v1/webrtc/token" in refused.json()["detail"]
            offer = await client.post("/api/offer", json={"sdp": "", "type": "offer"})
            assert offer.status_code == 401

            issued = await client.post("/api/v1/webrtc/token", headers=key)
            assert issued.status_code == 201
            token = issued.json()["token"]
            bearer = {"Authorization": f"Bearer {token}"}
            started = await client.post("/start", json={"transport": "webrtc"}, headers=bearer)
            assert started.status_code == 200 and started.json()["sessionId"]
            by_query = await client.post(f"/start?token={token}", json={"transport": "webrtc"})
            assert by_query.status_code == 200
            forged = await client.post(
                "/start", json={}, headers={"Authorization": f"Bearer {token[:-2]}xx"}
            )
            assert forged.status_code == 401 and "Invalid or expired" in forged.json()["detail"]
    finally:
        bot.stop()
    bot = cloud_services.bot(api={"webrtc_token": "off"}, data_dir=bot.settings.data_dir)
    try:
        async with api_client(bot) as client:  # the same keys, tokens turned off
            assert (await client.post("/start", json={})).status_code == 200
    finally:
        bot.stop()


async def test_keys_made_with_the_cli_open_the_api_until_revoked(cloud_services, tmp_path):
    created = mindbot(
        tmp_path, "keys", "create", "ci-bot", "--scopes", "write,read", "--rate", "50"
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("mb_") and len(key) == 46
    listed = mindbot(tmp_path, "keys", "list").stdout
    prefix = key[:11]
    assert f"{prefix}…\tci-bot\tread,write\t50/min\tnever used\tactive" in listed
    assert key not in listed and key[11:] not in listed
    bad = mindbot(tmp_path, "keys", "create", "x", "--scopes", "root")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "unknown scope" in bad.stderr
    assert parse_scopes("admin, read") == ("read", "admin")

    bot = cloud_services.bot(data_dir=tmp_path)
    try:
        async with api_client(bot) as client:
            headers = {"Authorization": f"Bearer {key}"}
            assert (await client.get("/api/v1/personas", headers=headers)).status_code == 200
            revoked = mindbot(tmp_path, "keys", "revoke", prefix)
            assert revoked.returncode == 0 and "Revoked key 1" in revoked.stdout
            assert (await client.get("/api/v1/personas", headers=headers)).status_code == 401
    finally:
        bot.stop()
    assert "\trevoked " in mindbot(tmp_path, "keys", "list").stdout
    assert mindbot(tmp_path, "keys", "revoke", "mb_nothing").returncode == 2


async def test_the_api_is_documented_by_openapi(cloud_services):
    bot = cloud_services.bot()
    try:
        async with api_client(bot) as client:
            spec = (await client.get("/openapi.json")).json()
    finally:
        bot.stop()
    paths = spec["paths"]
    assert {"/api/v1/sessions", "/api/v1/users/{user_id}/export", "/api/v1/jobs/{job_id}"} <= set(
        paths
    )
    assert "ApiKey" in spec["components"]["securitySchemes"]
    assert paths["/api/v1/sessions/{session_id}"]["get"]["responses"]["200"]["content"]
