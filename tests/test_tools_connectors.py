"""HTTP connectors from YAML: the shipped templates and test-only ones against a real local server.

The stand-in (``servers.http_api``) answers like Home Assistant, Slack and the Free Dictionary
API, and records every request, so each test checks both what the caller would hear and what
actually reached the service.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from loguru import logger

from mindbot.errors import ConfigError
from mindbot.harness import free_port
from mindbot.tools import ToolContext, ToolSession, ToolSettings
from mindbot.tools.connectors import make_tools

from servers.http_api import HA_TOKEN, SLACK_TOKEN, WEBHOOK_PATH, HttpApiServer

CATALOG_KEY = "cat-key-7d41e0"

SHIPPED = {
    "get_home_assistant_state",
    "call_home_assistant_service",
    "post_slack_message",
    "define_word",
}

# Test-only connectors: a secret webhook URL (Slack-style), and a GET with query and headers
# against the echo endpoint, which answers with the request it got.
NOTIFY_TEAM = """
name: notify_team
description: Send a short notification to the team chat.
label: the team chat
method: POST
url: "{secrets.team_webhook_url}"
json:
  text: "{text}"
  priority: "{priority}"
  urgent: "{urgent}"
parameters:
  text: {type: string, description: The notification., max_length: 200}
  priority: {type: integer, minimum: 1, maximum: 5, default: 3}
  urgent: {type: boolean, required: false}
confirm: "send {text} to the team chat"
"""

SEARCH_CATALOG = """
name: search_catalog
description: Search one section of the catalog.
label: the catalog
url: "{values.catalog_url}/echo/catalog/{section}"
query:
  q: "{query}"
  limit: "{limit}"
  key: "{secrets.catalog_key}"
  lang: en
headers:
  X-Api-Key: "{secrets.catalog_key}"
parameters:
  section: {type: string, description: The section.}
  query: {type: string, description: What to look for.}
  limit: {type: integer, minimum: 1, maximum: 20, default: 5}
response:
  speak:
    path: path
    section: segments.1
    q: query.q
    limit: query.limit
    key: query.key
    header: headers.x-api-key
timeout_secs: 0.5
"""


@pytest.fixture(scope="module")
def api():
    with HttpApiServer() as server:
        yield server


@pytest.fixture
def server(api: HttpApiServer) -> HttpApiServer:
    api.reset()
    return api


@pytest.fixture
def connector_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "connectors"
    folder.mkdir()
    (folder / "notify_team.yaml").write_text(NOTIFY_TEAM)
    (folder / "search_catalog.yaml").write_text(SEARCH_CATALOG)
    return folder


@pytest.fixture
def logged():
    """Every log line (DEBUG and up) written during the test."""
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="DEBUG")
    yield lines
    logger.remove(sink)


def settings_for(
    server: HttpApiServer, dirs: tuple[Path, ...] = (), values=None, secrets=None, **options
) -> ToolSettings:
    """Tool settings that point every connector at the stand-in."""
    options = {"retries": 0, "filler_after_secs": 30, **options}
    return ToolSettings(
        connectors={
            "dirs": list(dirs),
            "values": {
                "home_assistant_url": server.url,
                "slack_api_url": server.url + "/api",
                "slack_channel": "C024BE91L",
                "dictionary_api_url": server.url,
                "catalog_url": server.url,
                **(values or {}),
            },
            "secrets": {
                "home_assistant_token": HA_TOKEN,
                "slack_bot_token": SLACK_TOKEN,
                "team_webhook_url": server.url + WEBHOOK_PATH,
                "catalog_key": CATALOG_KEY,
                **(secrets or {}),
            },
        },
        **options,
    )


@asynccontextmanager
async def open_session(settings: ToolSettings):
    """A tool session with every available connector, and the list of its call reports."""
    reports: list = []
    async with httpx.AsyncClient() as http:
        tools = [t for t in make_tools(settings) if t.available(settings)]
        context = ToolContext(settings=settings, http=http)
        yield ToolSession(tools, context, on_call=reports.append), reports


def text_of(*things) -> str:
    return json.dumps([getattr(t, "__dict__", t) for t in things], default=str)


# --- Loading and availability --------------------------------------------------------------------


def test_shipped_templates_are_offered_only_once_their_settings_are_set(api):
    bare = ToolSettings()
    tools = {t.name: t for t in make_tools(bare)}
    assert set(tools) == SHIPPED
    assert [n for n, t in tools.items() if t.available(bare)] == ["define_word"]  # keyless

    only_url = ToolSettings(connectors={"values": {"home_assistant_url": "http://ha:8123"}})
    assert not tools["get_home_assistant_state"].available(only_url)  # no token yet
    configured = settings_for(api)
    assert all(t.available(configured) for t in tools.values())

    state, service = tools["get_home_assistant_state"], tools["call_home_assistant_service"]
    assert state.read_only and state.confirm is None and state.label == "Home Assistant"
    assert not service.read_only and service.confirm is not None
    assert state.properties["entity_id"]["pattern"] == r"^[a-z_]+\.[a-z0-9_]+$"
    assert service.required == ("domain", "service", "entity_id")
    assert tools["post_slack_message"].properties["text"]["maxLength"] == 2000


# --- The shipped templates -----------------------------------------------------------------------


async def test_home_assistant_state_is_read_with_the_token(server, logged):
    async with open_session(settings_for(server)) as (session, reports):
        result = await session.invoke(
            "get_home_assistant_state", {"entity_id": "sensor.living_room_temperature"}
        )
    assert result == {
        "ok": True,
        "result": {
            "name": "Living room temperature",
            "state": "21.5",
            "unit": "°C",
            "last_changed": "2026-03-14T09:26:53.589793+00:00",
        },
    }
    [request] = server.requests()
    assert (request.method, request.path) == ("GET", "/api/states/sensor.living_room_temperature")
    assert request.headers["authorization"] == f"Bearer {HA_TOKEN}"
    assert HA_TOKEN not in text_of(result, *reports, *logged)


async def test_home_assistant_unknown_entity_and_wrong_token_are_spoken_errors(server):
    async with open_session(settings_for(server)) as (session, _):
        missing = await session.invoke("get_home_assistant_state", {"entity_id": "light.attic"})
        bad = await session.invoke("get_home_assistant_state", {"entity_id": "Light Attic"})
    assert missing == {
        "ok": False,
        "error": "not_found",
        "message": "Home Assistant found nothing for that.",
    }
    assert bad["error"] == "bad_arguments" and "entity_id" in bad["message"]
    assert [r.path for r in server.requests()] == ["/api/states/light.attic"]

    wrong = settings_for(server, secrets={"home_assistant_token": "not-the-token"})
    async with open_session(wrong) as (session, _):
        refused = await session.invoke("get_home_assistant_state", {"entity_id": "light.kitchen"})
    assert refused["error"] == "rejected" and "credentials" in refused["message"]
    assert "not-the-token" not in refused["message"]


async def test_home_assistant_service_runs_only_after_a_spoken_yes(server):
    arguments = {"domain": "light", "service": "turn_on", "entity_id": "light.kitchen"}
    said = ["turn on the kitchen light"]
    async with open_session(settings_for(server)) as (session, reports):
        proposed = await session.invoke("call_home_assistant_service", arguments, user_turns=said)
        assert proposed["needs_confirmation"] is True
        assert proposed["action"] == "call turn_on on light.kitchen in Home Assistant"
        assert server.requests() == []

        declined = await session.invoke("confirm_action", {}, user_turns=[*said, "no"])
        assert declined["ok"] is False and declined["error"] == "not_confirmed"
        assert server.requests() == []

        await session.invoke("call_home_assistant_service", arguments, user_turns=said)
        assert server.requests() == []
        done = await session.invoke("confirm_action", {}, user_turns=[*said, "yes please"])
        after = await session.invoke("get_home_assistant_state", {"entity_id": "light.kitchen"})

    kitchen = {"entity": "light.kitchen", "name": "Kitchen light", "state": "on"}
    assert done == {"ok": True, "result": {"changed": [kitchen]}}
    post, _ = server.requests()
    assert (post.method, post.path) == ("POST", "/api/services/light/turn_on")
    assert post.json == {"entity_id": "light.kitchen"}
    assert post.headers["authorization"] == f"Bearer {HA_TOKEN}"
    assert after["result"]["state"] == "on"
    assert reports[-2].name == "call_home_assistant_service" and reports[-2].confirmed


async def test_slack_message_is_posted_after_a_yes(server, logged):
    text = {"text": "Standup moves to ten tomorrow"}
    said = ["tell the team standup moves to ten"]
    async with open_session(settings_for(server)) as (session, reports):
        proposed = await session.invoke("post_slack_message", text, user_turns=said)
        assert proposed["action"] == (
            'post "Standup moves to ten tomorrow" to the team\'s Slack channel'
        )
        assert server.requests() == []
        done = await session.invoke("confirm_action", {}, user_turns=[*said, "yes please"])

    assert done == {"ok": True, "result": {"posted": "Standup moves to ten tomorrow"}}
    [request] = server.requests()
    assert (request.method, request.path) == ("POST", "/api/chat.postMessage")
    assert request.headers["authorization"] == f"Bearer {SLACK_TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert request.json == {"channel": "C024BE91L", "text": "Standup moves to ten tomorrow"}
    assert SLACK_TOKEN not in text_of(done, *reports, *logged)


async def test_slack_refusals_arrive_as_ok_false_and_are_spoken(server):
    said = ["post hello"]
    for settings, reason in (
        (settings_for(server, values={"slack_channel": "C0NOPE"}), "channel not found"),
        (settings_for(server, secrets={"slack_bot_token": "xoxb-wrong"}), "invalid auth"),
    ):
        async with open_session(settings) as (session, _):
            await session.invoke("post_slack_message", {"text": "hello"}, user_turns=said)
            result = await session.invoke("confirm_action", {}, user_turns=[*said, "yes"])
        assert result == {
            "ok": False,
            "error": "rejected",
            "message": f"Slack refused the request: {reason}.",
        }
    assert len(server.requests()) == 2


async def test_a_word_is_defined_by_the_keyless_dictionary(server):
    async with open_session(settings_for(server)) as (session, _):
        result = await session.invoke("define_word", {"word": "hello"})
        unknown = await session.invoke("define_word", {"word": "blorptastic"})
    assert result["ok"] is True
    assert result["result"]["word"] == "hello"
    assert result["result"]["meanings"][0] == {
        "part_of_speech": "exclamation",
        "definition": "used as a greeting or to begin a phone conversation.",
        "example": "hello there, Katie!",
    }
    assert [m["part_of_speech"] for m in result["result"]["meanings"]] == [
        "exclamation",
        "noun",
        "verb",
    ]
    assert result["result"]["more"] == 1
    assert unknown["error"] == "not_found" and "dictionary" in unknown["message"]
    first, _ = server.requests()
    assert first.path == "/api/v2/entries/en/hello" and "authorization" not in first.headers


# --- Connectors from the settings' folders -------------------------------------------------------


async def test_a_connector_from_a_settings_folder_posts_to_a_secret_webhook(
    server, connector_dir, logged
):
    settings = settings_for(server, dirs=(connector_dir,))
    said = ["tell the team the build is green"]
    async with open_session(settings) as (session, reports):
        assert {"notify_team", "search_catalog"} <= set(session.tools)
        too_high = await session.invoke(
            "notify_team", {"text": "build is green", "priority": 9}, user_turns=said
        )
        extra = await session.invoke(
            "notify_team", {"text": "build is green", "channel": "#random"}, user_turns=said
        )
        assert too_high["error"] == extra["error"] == "bad_arguments"
        assert "priority" in too_high["message"] and "channel" in extra["message"]

        proposed = await session.invoke("notify_team", {"text": "build is green"}, user_turns=said)
        assert proposed["action"] == "send build is green to the team chat"
        assert server.requests() == []
        done = await session.invoke("confirm_action", {}, user_turns=[*said, "yes"])

    assert done == {"ok": True, "result": {"done": True}}
    [request] = server.requests()
    assert (request.method, request.path) == ("POST", WEBHOOK_PATH)
    assert request.json == {"text": "build is green", "priority": 3}  # typed; unset left out
    assert WEBHOOK_PATH not in text_of(done, proposed, *reports, *logged)


async def test_a_later_file_replaces_a_shipped_one_of_the_same_name(server, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "define_word.yaml").write_text(
        "name: define_word\ndescription: Echo a word.\nlabel: my dictionary\n"
        'url: "{values.catalog_url}/echo/words/{word}"\n'
        "parameters: {word: {type: string}}\nresponse: {speak: {got: segments.1}}\n"
    )
    settings = settings_for(server, dirs=(folder,))
    assert [t.label for t in make_tools(settings) if t.name == "define_word"] == ["my dictionary"]
    async with open_session(settings) as (session, _):
        result = await session.invoke("define_word", {"word": "hello"})
    assert result == {"ok": True, "result": {"got": "hello"}}
    assert [r.path for r in server.requests()] == ["/echo/words/hello"]


async def test_query_headers_and_echoed_secrets(server, connector_dir, logged):
    settings = settings_for(server, dirs=(connector_dir,))
    async with open_session(settings) as (session, reports):
        result = await session.invoke(
            "search_catalog", {"section": "books", "query": "x&key=stolen&lang=fr#frag"}
        )
    assert result["ok"] is True
    assert result["result"] == {
        "path": "/echo/catalog/books",
        "section": "books",
        "q": "x&key=stolen&lang=fr#frag",
        "limit": "5",
        "key": "[redacted]",
        "header": "[redacted]",
    }
    [request] = server.requests()
    assert request.query == {
        "q": ["x&key=stolen&lang=fr#frag"],
        "limit": ["5"],
        "key": [CATALOG_KEY],
        "lang": ["en"],
    }
    assert request.headers["x-api-key"] == CATALOG_KEY
    assert CATALOG_KEY not in text_of(result, *reports, *logged)


# --- Injection through arguments -----------------------------------------------------------------


@pytest.mark.parametrize(
    "section",
    [
        "../admin",
        "../../_control/reset",
        "a/b?x=1#frag",
        "%2F..%2Fadmin",
        "..%2F..%2F_control",
        "https://evil.example/x",
        "//evil.example/x",
        "@evil.example",
        "books\\..\\admin",
    ],
)
async def test_a_path_argument_stays_one_segment_on_the_same_host(server, connector_dir, section):
    settings = settings_for(server, dirs=(connector_dir,))
    async with open_session(settings) as (session, _):
        result = await session.invoke("search_catalog", {"section": section, "query": "q"})
    assert result["ok"] is True, result
    assert result["result"]["section"] == section  # arrived whole, as one segment
    [request] = server.requests()
    segments = request.path.split("/")
    assert segments[:3] == ["", "echo", "catalog"] and len(segments) == 4
    assert unquote(segments[3]) == section
    assert request.query["q"] == ["q"] and request.query["key"] == [CATALOG_KEY]
    assert request.headers["host"] == f"127.0.0.1:{server.port}"


@pytest.mark.parametrize("section", ["..", ".", "  ", ""])
async def test_a_dot_segment_or_empty_path_argument_is_refused(server, connector_dir, section):
    settings = settings_for(server, dirs=(connector_dir,))
    async with open_session(settings) as (session, _):
        result = await session.invoke("search_catalog", {"section": section, "query": "q"})
    assert result["ok"] is False and result["error"] == "bad_arguments"
    assert server.requests() == []


async def test_a_path_argument_cannot_climb_over_another(server, tmp_path):
    folder = tmp_path / "two"
    folder.mkdir()
    (folder / "shelf.yaml").write_text(
        "name: get_shelf_item\ndescription: Get an item from a shelf.\nlabel: the shelves\n"
        'url: "{values.catalog_url}/echo/{shelf}/{item}/details"\n'
        "parameters: {shelf: {type: string}, item: {type: string}}\n"
        "response: {speak: {path: path}}\n"
    )
    async with open_session(settings_for(server, dirs=(folder,))) as (session, _):
        fine = await session.invoke("get_shelf_item", {"shelf": "a", "item": "b"})
        climbing = await session.invoke("get_shelf_item", {"shelf": "a", "item": ".."})
    assert fine == {"ok": True, "result": {"path": "/echo/a/b/details"}}
    assert climbing["ok"] is False and climbing["error"] == "bad_arguments"
    assert [r.path for r in server.requests()] == ["/echo/a/b/details"]


async def test_redirects_are_not_followed(server, tmp_path):
    folder = tmp_path / "redirect"
    folder.mkdir()
    (folder / "follow.yaml").write_text(
        "name: get_linked\ndescription: Follow a link.\nlabel: the link service\n"
        'url: "{values.catalog_url}/redirect"\n'
        'query: {to: "{values.catalog_url}/echo/stolen"}\n'
        'headers: {Authorization: "Bearer {secrets.catalog_key}"}\n'
        "response: {speak: {path: path}}\n"
    )
    async with open_session(settings_for(server, dirs=(folder,))) as (session, _):
        result = await session.invoke("get_linked", {})
    assert result["ok"] is False and result["error"] == "failed"
    assert [r.path for r in server.requests()] == ["/redirect"]


# --- Failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "kind", "words"),
    [
        ("fail", "unavailable", "The catalog is having problems right now."),
        ("malformed", "failed", "The catalog sent an answer I couldn't read."),
        ("slow", "timeout", "The catalog took too long to answer."),
    ],
)
async def test_server_failures_are_structured_errors(
    server, connector_dir, logged, mode, kind, words
):
    server.behave(mode, delay=1.5)
    settings = settings_for(server, dirs=(connector_dir,), retries=1)
    async with open_session(settings) as (session, reports):
        result = await session.invoke("search_catalog", {"section": "books", "query": "dune"})
    assert result == {"ok": False, "error": kind, "message": words}
    # Only transient errors of read-only tools are retried (retries=1 here).
    assert len(server.requests()) == (2 if mode == "fail" else 1)
    assert reports[-1].status == "error"
    assert CATALOG_KEY not in text_of(result, *reports, *logged)


async def test_an_unreachable_service_is_unavailable_and_its_secret_url_stays_secret(
    server, connector_dir, logged
):
    dead = f"http://127.0.0.1:{free_port()}"
    settings = settings_for(
        server,
        dirs=(connector_dir,),
        values={"catalog_url": dead},
        secrets={"team_webhook_url": dead + WEBHOOK_PATH},
    )
    said = ["tell the team hi"]
    async with open_session(settings) as (session, reports):
        search = await session.invoke("search_catalog", {"section": "books", "query": "dune"})
        await session.invoke("notify_team", {"text": "hi"}, user_turns=said)
        notify = await session.invoke("confirm_action", {}, user_turns=[*said, "yes"])
    assert search == {
        "ok": False,
        "error": "unavailable",
        "message": "I couldn't reach the catalog.",
    }
    assert notify == {
        "ok": False,
        "error": "unavailable",
        "message": "I couldn't reach the team chat.",
    }
    assert WEBHOOK_PATH not in text_of(search, notify, *reports, *logged)
    assert CATALOG_KEY not in text_of(search, notify, *reports, *logged)


# --- Invalid files -------------------------------------------------------------------------------

GOOD = {
    "name": "get_thing",
    "description": "Get a thing.",
    "url": '"https://api.example.com/things/{thing}"',
    "parameters": "{thing: {type: string}}",
    "response": "{speak: {name: name}}",
}


def yaml_of(**fields) -> str:
    merged = {**GOOD, **fields}
    return "".join(f"{k}: {v}\n" for k, v in merged.items() if v is not None)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (yaml_of(parameters="{thing: {type: text}}"), "parameters.thing.type: input should be"),
        (yaml_of(url='"https://api.example.com/things/{town}"'), "url: unknown placeholder {town}"),
        (
            yaml_of(headers='{Authorization: "Bearer {secret.token}"}'),
            "headers.Authorization: unknown placeholder {secret.token}",
        ),
        (yaml_of(method="POST", response=None), "confirm: is required for POST"),
        (yaml_of(url='"{values.base}{thing}"'), "url: {thing} comes before the path"),
        (yaml_of(url='"https://{thing}.example.com/x"'), "url: {thing} comes before the path"),
        (yaml_of(url='"https://api.example.com/x?id={thing}"'), "url: put the query under"),
        (
            yaml_of(method="DELETE", confirm='"delete {thing} with {secrets.key}"'),
            "confirm: may name parameters only",
        ),
        (
            yaml_of(parameters="{thing: {type: string}, spare: {type: integer}}"),
            "parameters.spare: not used",
        ),
        (
            yaml_of(parameters="{thing: {type: integer, default: soon}}"),
            "parameters.thing: 'soon' is not an integer",
        ),
        (yaml_of(response=None), "response: say which fields to speak"),
        (yaml_of(name="Get-Thing"), "name: string should match pattern"),
        (yaml_of(methd="GET"), "methd: extra inputs are not permitted"),
        (yaml_of(url='"https://api.example.com/{thing"'), "url: a lone '{'"),
        ("name: [unclosed\n", "not valid YAML at line"),
        ("- just\n- a list\n", "must be a mapping"),
    ],
)
def test_an_invalid_file_is_a_config_error_naming_file_and_field(tmp_path, text, where):
    (tmp_path / "broken.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        make_tools(ToolSettings(connectors={"dirs": [tmp_path]}))
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'broken.yaml'}: ")
    assert where in message and "\n" not in message


def test_duplicate_names_and_missing_folders_are_config_errors(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml_of())
    (tmp_path / "b.yaml").write_text(yaml_of())
    with pytest.raises(ConfigError, match=r"b\.yaml: name: 'get_thing' is already .*a\.yaml"):
        make_tools(ToolSettings(connectors={"dirs": [tmp_path]}))
    with pytest.raises(ConfigError, match="nowhere is not a folder"):
        make_tools(ToolSettings(connectors={"dirs": [tmp_path / "nowhere"]}))
