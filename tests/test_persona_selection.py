"""Each call speaks as its persona: from the request, by dialled number, or the default."""

import pytest

from mindbot.callsim import PhoneCall
from mindbot.errors import ConfigError
from mindbot.harness import serve, ws_url
from mindbot.personas import SHIPPED_DIR, PersonaLibrary
from mindbot.runtime import MindBot
from pipelines.assistant import run

from conftest import make_settings, wait_until

SHIPPED = PersonaLibrary([SHIPPED_DIR])


@pytest.mark.parametrize(
    ("parameters", "to_number", "expected"),
    [
        ({"persona": "tutor"}, "+15550100002", "tutor"),
        ({}, "+15550100777", "receptionist"),
        ({"persona": "no-such-persona"}, "+15550100002", "mindbot"),
        ({}, "+15550100002", "mindbot"),
    ],
)
async def test_the_call_speaks_as_its_persona(cloud_services, parameters, to_number, expected):
    bot = cloud_services.bot(persona_by_number={"+15550100777": "receptionist"})
    try:
        async with serve(bot, run) as base_url:
            url = ws_url(base_url)
            async with PhoneCall(url, to_number=to_number, custom_parameters=parameters) as call:
                await call.wait_for_bot_speech(timeout=10, quiet=0)
                await wait_until(lambda: cloud_services.cartesia.requests)
    finally:
        bot.stop()
    persona = SHIPPED.get(expected)
    first = cloud_services.cartesia.requests[0]
    assert first["transcript"].strip() == persona.greeting
    assert first["voice"]["id"] == persona.voices["cartesia"]


def test_an_unknown_default_persona_stops_start_up():
    with pytest.raises(ConfigError, match="nobody"):
        MindBot(make_settings(persona="nobody"))


def test_an_invalid_persona_folder_stops_start_up(tmp_path):
    (tmp_path / "broken.yaml").write_text("name: broken\ngreeting: [not, a, string]\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        MindBot(make_settings(persona_dirs=[tmp_path]))
