"""Personas: the shipped ones load, greetings fit the caller, and every bad file is one line."""

from pathlib import Path

import pytest

from mindbot.errors import ConfigError
from mindbot.personas import SHIPPED_DIR, Persona, PersonaLibrary, load_persona

VALID = """\
name: {name}
display_name: Front Desk
instructions: |
  You answer the phone for a bakery.
  Keep answers short.
greeting: Hello, thanks for calling the bakery.
"""


def write(folder: Path, stem: str, text: str) -> Path:
    """Write ``text`` to ``folder/stem.yaml`` and return the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def persona(**fields) -> Persona:
    """A valid persona with ``fields`` changed."""
    values = {
        "name": "front-desk",
        "display_name": "Front Desk",
        "instructions": "You answer the phone.",
        "greeting": "Hello, thanks for calling.",
    }
    values.update(fields)
    return Persona(**values)


def test_the_shipped_personas_load_and_the_default_is_mindbot():
    library = PersonaLibrary([SHIPPED_DIR])
    assert library.names() == ["mindbot", "receptionist", "tutor"]
    assert library.default.name == "mindbot"
    assert library.default.greeting == "Hi, I'm MindBot. How can I help you today?"


@pytest.mark.parametrize("name", ["mindbot", "receptionist", "tutor"])
def test_each_shipped_persona_is_written_for_the_ear(name):
    shipped = load_persona(SHIPPED_DIR / f"{name}.yaml")
    assert len(shipped.greeting.split()) < 15
    assert shipped.greeting_for("Ana") != shipped.greeting_for(None)
    assert shipped.voices["piper"] == "en_US-joe-medium"
    assert len(shipped.voices["cartesia"].split("-")) == 5
    for line in shipped.system_instruction().splitlines():
        assert not line.lstrip().startswith(("-", "*", "#")), line
        assert "**" not in line and "`" not in line, line


def test_greeting_for_uses_the_returning_greeting_only_with_a_name():
    library = PersonaLibrary([SHIPPED_DIR])
    assert library.default.greeting_for(None) == "Hi, I'm MindBot. How can I help you today?"
    assert library.default.greeting_for("  ") == "Hi, I'm MindBot. How can I help you today?"
    assert library.default.greeting_for("Ana") == "Welcome back, Ana! How can I help you today?"


def test_without_a_returning_greeting_a_known_name_gets_the_plain_greeting():
    assert persona().greeting_for("Ana") == "Hello, thanks for calling."


def test_the_system_instruction_ends_with_the_speaking_style():
    styled = persona(speaking_style="Speak warmly and a little slowly.")
    assert styled.system_instruction() == (
        "You answer the phone.\n\nSpeak warmly and a little slowly."
    )
    assert persona().system_instruction() == "You answer the phone."


def test_a_valid_file_loads_with_its_defaults(tmp_path):
    loaded = load_persona(write(tmp_path, "front-desk", VALID.format(name="front-desk")))
    assert loaded.instructions == "You answer the phone for a bakery.\nKeep answers short."
    assert (loaded.tools, loaded.voices, loaded.language) == ((), {}, "en")


@pytest.mark.parametrize(
    ("text", "field", "says"),
    [
        ("name: desk\ngreeting: [oops\n", None, "line 3"),
        ("- name: desk\n", None, "mapping"),
        ("", None, "empty"),
        (VALID + "voice: abc\n", "voice", "unknown field"),
        (VALID.replace("greeting: Hello, thanks for calling the bakery.\n", ""), "greeting", ""),
        (VALID + "tools: web_search\n", "tools", "list"),
        (VALID.replace("Hello, thanks for calling the bakery.", "42"), "greeting", "string"),
        (VALID.replace("display_name: Front Desk", "display_name: ''"), "display_name", "empty"),
        (VALID + "voices: {elevenlabs: abc}\n", "voices.elevenlabs", "cartesia"),
        (VALID + "tools: [lookup, 'look up']\n", "tools", "identifiers"),
        (VALID + "language: no\n", "language", "quote"),
        (VALID + "greeting: Hi again.\n", "greeting", "twice"),
        (VALID.replace("Hello, thanks", "Hello, **thanks**"), "greeting", "plain words"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_file_and_field(tmp_path, text, field, says):
    path = write(tmp_path, "desk", text.replace("{name}", "desk"))
    with pytest.raises(ConfigError) as error:
        load_persona(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    if field:
        assert f"'{field}'" in message
    assert says in message


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="not found") as error:
        load_persona(tmp_path / "ghost.yaml")
    assert str(error.value).startswith(str(tmp_path / "ghost.yaml"))


def test_empty_instructions_are_rejected(tmp_path):
    text = VALID.format(name="desk").replace(
        "|\n  You answer the phone for a bakery.\n  Keep answers short.", "'   '"
    )
    with pytest.raises(ConfigError, match="field 'instructions' must not be empty"):
        load_persona(write(tmp_path, "desk", text))


@pytest.mark.parametrize("name", ["Desk", "front_desk", "desk-", "-desk", "front--desk"])
def test_a_bad_name_is_rejected(tmp_path, name):
    with pytest.raises(ConfigError, match="field 'name'"):
        load_persona(write(tmp_path, name, VALID.format(name=name)))


def test_the_name_must_match_the_file_stem(tmp_path):
    path = write(tmp_path, "reception", VALID.format(name="front-desk"))
    with pytest.raises(ConfigError) as error:
        load_persona(path)
    assert str(error.value).startswith(f"{path}: field 'name' is 'front-desk'")
    assert "reception.yaml" in str(error.value)


def test_only_the_returning_greeting_may_use_name():
    assert persona(greeting_returning="Hi {name}!").greeting_for("Bo") == "Hi Bo!"
    with pytest.raises(ValueError, match="greeting_returning"):
        persona(greeting="Hi {name}, how can I help?")


@pytest.mark.parametrize(
    "fields",
    [
        {"greeting": "Hello {caller}."},
        {"greeting_returning": "Welcome back, {first}!"},
        {"greeting_returning": "Welcome back, {name!r}!"},
        {"greeting_returning": "Welcome back, {}!"},
        {"greeting_returning": "Welcome back, {name!"},
    ],
)
def test_placeholders_other_than_name_are_rejected(fields):
    with pytest.raises(ValueError, match=next(iter(fields))):
        persona(**fields)


def test_an_unknown_placeholder_in_a_file_is_one_line(tmp_path):
    text = VALID.format(name="desk") + "greeting_returning: Hi {first_name}!\n"
    with pytest.raises(ConfigError, match=r"field 'greeting_returning': may use only \{name\}"):
        load_persona(write(tmp_path, "desk", text))


def test_a_later_folder_overrides_a_shipped_persona_by_name(tmp_path):
    write(tmp_path, "tutor", VALID.format(name="tutor"))
    write(tmp_path, "front-desk", VALID.format(name="front-desk"))
    library = PersonaLibrary([SHIPPED_DIR, tmp_path])
    assert library.names() == ["front-desk", "mindbot", "receptionist", "tutor"]
    assert library.get("tutor").greeting == "Hello, thanks for calling the bakery."
    assert library.source("tutor") == tmp_path / "tutor.yaml"
    assert library.default.greeting == "Hi, I'm MindBot. How can I help you today?"


def test_an_unknown_persona_lists_the_known_ones():
    with pytest.raises(ConfigError) as error:
        PersonaLibrary([SHIPPED_DIR]).get("pirate")
    assert str(error.value) == (
        "unknown persona 'pirate'; known personas: mindbot, receptionist, tutor"
    )


def test_the_first_bad_file_stops_the_library(tmp_path):
    write(tmp_path, "good", VALID.format(name="good"))
    bad = write(tmp_path, "bad", VALID.format(name="bad") + "colour: blue\n")
    with pytest.raises(ConfigError) as error:
        PersonaLibrary([SHIPPED_DIR, tmp_path])
    assert str(error.value).startswith(f"{bad}: unknown field 'colour'")


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(ConfigError, match="persona folder not found"):
        PersonaLibrary([tmp_path / "nowhere"])


def test_a_library_without_mindbot_has_no_default(tmp_path):
    write(tmp_path, "desk", VALID.format(name="desk"))
    with pytest.raises(ConfigError, match="known personas: desk"):
        _ = PersonaLibrary([tmp_path]).default


def test_a_persona_is_frozen():
    with pytest.raises(ValueError):
        persona().greeting = "Yo."
