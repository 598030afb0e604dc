"""The voice catalog: real shipped voices, tolerant name lookup, per-language picks, user files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mindbot.config import Settings
from mindbot.errors import ConfigError
from mindbot.preferences import LANGUAGES
from mindbot.voices import (
    SHIPPED_DIR,
    ProviderVoices,
    Voice,
    VoiceCatalog,
    base_language,
    catalog_speech_style,
    language_switching,
)

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
KATIE = "f786b574-daa5-4673-aa0c-cbe3e8534c02"
SPANISH_LADY = "d4db5fb9-f44b-4bd1-85fa-192e0f0d75f9"
BRITISH_READING_LADY = "71a7ad14-091c-4e8e-a314-022ece01c121"


@pytest.fixture(scope="module")
def catalog() -> VoiceCatalog:
    return VoiceCatalog.load()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "voices.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _small(*voices: Voice, default: str | None = None, languages=()) -> VoiceCatalog:
    return VoiceCatalog(
        {"cartesia": ProviderVoices(default=default, languages=languages, voices=voices)}
    )


# -- The shipped catalog -----------------------------------------------------------------


def test_the_shipped_cartesia_voices_are_real_ids_and_include_the_configured_default(catalog):
    voices = catalog.list("cartesia")
    assert len(voices) >= 30
    assert all(UUID.fullmatch(v.id) for v in voices)
    assert (
        catalog.default("cartesia").id == Settings.model_fields["cartesia_voice"].default == KATIE
    )
    assert catalog.get(BRITISH_READING_LADY, "cartesia").name == "British Reading Lady"


def test_every_supported_language_has_a_native_cartesia_voice(catalog):
    for code in LANGUAGES:
        voice = catalog.for_language(code, "cartesia")
        assert voice is not None and voice.speaks(code), code
    assert catalog.for_language("es", "cartesia").id == SPANISH_LADY
    assert catalog.languages("cartesia") == sorted(LANGUAGES)


def test_the_piper_catalog_is_the_packaged_english_voice(catalog):
    assert [v.id for v in catalog.list("piper")] == [Settings.model_fields["piper_voice"].default]
    assert catalog.resolve("joe", "piper").id == "en_US-joe-medium"
    assert catalog.for_language("en", "piper").name == "Joe"
    assert catalog.for_language("es", "piper") is None
    assert catalog.languages("piper") == ["en"]
    assert catalog.providers() == ["cartesia", "piper"]


# -- Resolving what a caller says --------------------------------------------------------


@pytest.mark.parametrize(
    ("said", "name"),
    [
        ("Katie", "Katie"),
        ("KATIE", "Katie"),
        ("the Katie voice, please", "Katie"),
        ("katy", "Katie"),
        ("the british reading lady", "British Reading Lady"),
        ("British-Reading Lady!", "British Reading Lady"),
        ("barber shop man", "Barbershop Man"),
        ("Jaqueline", "Jacqueline"),
        ("jacquéline", "Jacqueline"),
        ("Britsh Reading Lady", "British Reading Lady"),
        ("newsmen", "Newsman"),
        ("a Spanish lady", "Spanish-speaking Lady"),
        ("Spanish speaking lady", "Spanish-speaking Lady"),
        (KATIE.upper(), "Katie"),
        (f"  {BRITISH_READING_LADY} ", "British Reading Lady"),
    ],
)
def test_resolve_tolerates_case_articles_spacing_and_misspellings(catalog, said, name):
    assert catalog.resolve(said, "cartesia").name == name


@pytest.mark.parametrize(
    "said",
    [
        "",
        "   ",
        "the voice",
        "news",
        "Gandalf",
        "😀🎤",
        "שלום",
        "e\u0301\u0301\u0301",
        "Katie\x00",  # NUL inside: still not a different voice...
        "x" * 10_000,
        None,
        42,
    ],
)
def test_resolve_returns_none_for_unknown_or_odd_input(catalog, said):
    voice = catalog.resolve(said, "cartesia")
    # ...NUL is punctuation to the matcher, so "Katie\x00" is Katie; everything else is unknown.
    assert voice is None or (said == "Katie\x00" and voice.name == "Katie")


def test_resolve_refuses_an_ambiguous_misspelling_and_unknown_providers(catalog):
    twins = _small(
        Voice(name="Anna", id="a", languages=("en",)),
        Voice(name="Anne", id="b", languages=("en",)),
    )
    assert twins.resolve("Anna", "cartesia").id == "a"
    assert twins.resolve("Annx", "cartesia") is None  # as close to both
    assert catalog.resolve("Katie", "elevenlabs") is None
    assert catalog.list("elevenlabs") == [] and catalog.languages("elevenlabs") == []
    assert catalog.for_language("en", "elevenlabs") is None


def test_the_resolver_gives_ids_for_the_voice_commands(catalog):
    resolve_voice = catalog.resolver("cartesia")
    assert resolve_voice("switch to the British reading lady") is None  # a command, not a name
    assert resolve_voice("British reading lady") == BRITISH_READING_LADY
    assert resolve_voice("nobody") is None


# -- Languages -----------------------------------------------------------------------------


def test_for_language_ignores_regions_prefers_the_default_and_falls_back_to_multilingual():
    catalog = _small(
        Voice(name="Ann", id="en-1", languages=("en",)),
        Voice(name="Bea", id="en-2", languages=("en", "fr")),
        Voice(name="Carmen", id="es-1", languages=("es",)),
        default="Bea",
        languages=("en", "fr", "es", "de"),
    )
    assert catalog.for_language("en", "cartesia").id == "en-2"  # the default is native
    assert catalog.for_language("ES-mx", "cartesia").id == "es-1"
    assert catalog.for_language("es_419", "cartesia").id == "es-1"
    assert catalog.for_language("de", "cartesia").id == "en-2"  # no native voice: the default
    assert catalog.for_language("ja", "cartesia") is None  # the provider cannot speak it
    for odd in ("", "multi", "español", "\x00", "e" * 10_000, None):
        assert catalog.for_language(odd, "cartesia") is None


@pytest.mark.parametrize(
    ("tag", "code"),
    [("es", "es"), ("es-MX", "es"), ("EN_us", "en"), ("yue", "yue"), ("multi", None), ("", None)],
)
def test_base_language(tag, code):
    assert base_language(tag) == code


# -- The user's voices file ----------------------------------------------------------------


def test_a_user_file_adds_replaces_and_changes_the_default(tmp_path):
    path = _write(
        tmp_path,
        f"""
cartesia:
  default: My Clone
  voices:
    - name: My Clone
      id: 11111111-2222-3333-4444-555555555555
      languages: [en, de]
      aliases: [me]
    - name: Katie
      id: 99999999-2222-3333-4444-555555555555
      languages: [en]
    - name: Reader
      id: {BRITISH_READING_LADY}
      languages: [en]
elevenlabs:
  voices:
    - name: Rachel
      id: 21m00Tcm4TlvDq8ikWAM
      languages: [en]
""",
    )
    catalog = VoiceCatalog.load(path)
    assert catalog.default("cartesia").name == "My Clone"
    assert catalog.resolve("me", "cartesia").name == "My Clone"
    assert catalog.resolve("Katie", "cartesia").id.startswith("99999999")  # replaced by name
    assert catalog.get(KATIE, "cartesia") is None
    assert catalog.resolve("reader", "cartesia").id == BRITISH_READING_LADY  # replaced by id
    assert catalog.resolve("British Reading Lady", "cartesia") is None
    assert catalog.resolve("Jacqueline", "cartesia") is not None  # the rest is kept
    assert catalog.for_language("de", "cartesia").name == "My Clone"
    assert catalog.resolver("elevenlabs")("rachel") == "21m00Tcm4TlvDq8ikWAM"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "voices file is empty"),
        ("- a\n- b\n", "expected a mapping of providers at the top level, got a list"),
        ("cartesia: [\n", "invalid YAML at line"),
        ("cartesia:\n  voices: []\ncartesia:\n  voices: []\n", "appears twice"),
        ("Cartesia TTS:\n  voices: []\n", "is not a provider name"),
        ("cartesia: 3\n", "cartesia: expected default, languages and voices"),
        (
            "cartesia:\n  voices:\n    - name: A\n      languages: [en]\n",
            "cartesia.voices[0].id is required",
        ),
        (
            "cartesia:\n  voices:\n    - {name: A, id: x, languages: [en], colour: red}\n",
            "unknown field cartesia.voices[0].colour",
        ),
        (
            "cartesia:\n  voices:\n    - {name: A, id: x, languages: [english]}\n",
            "cartesia.voices[0].languages: must be ISO 639-1 codes such as 'en' or 'es', "
            "got 'english'",
        ),
        (
            "cartesia:\n  voices:\n    - {name: A, id: x, languages: []}\n",
            "cartesia.voices[0].languages: tuple should have at least 1 item",
        ),
        (
            "cartesia:\n  voices:\n    - {name: A, id: x, languages: [en], gender: robot}\n",
            "cartesia.voices[0].gender: input should be",
        ),
        (
            "cartesia:\n  voices:\n    - {name: Zed, id: x, languages: [en], aliases: [Katie]}\n",
            "the name 'Katie' is used by both",
        ),
        ("cartesia:\n  default: Nobody\n", "default 'Nobody' is not one of its voices"),
        (
            "piper:\n  voices:\n    - {name: A, id: x, languages: [en]}\n"
            "    - {name: B, id: X, languages: [en]}\n",
            "the id 'X' is listed twice",
        ),
        (
            "cartesia:\n  voices:\n    - {name: '!!!', id: x, languages: [en]}\n",
            "no letters or digits",
        ),
    ],
)
def test_a_bad_voices_file_is_one_clear_line(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        VoiceCatalog.load(path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    assert expected in message


def test_replacing_the_shipped_default_by_name_makes_the_replacement_the_default(tmp_path):
    clone = "12345678-1234-1234-1234-123456789abc"
    path = _write(
        tmp_path, f"cartesia:\n  voices:\n    - {{name: Katie, id: {clone}, languages: [en]}}\n"
    )
    catalog = VoiceCatalog.load(path)
    assert catalog.default("cartesia").id == clone
    assert catalog.for_language("en", "cartesia").id == clone
    assert len(catalog.list("cartesia")) == len(VoiceCatalog.load().list("cartesia"))


def test_a_missing_or_unreadable_voices_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.yaml: voices file not found"):
        VoiceCatalog.load(tmp_path / "missing.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00cartesia")
    with pytest.raises(ConfigError, match="cannot read voices file"):
        VoiceCatalog.load(binary)


def test_the_shipped_files_are_all_loaded(tmp_path):
    names = sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml"))
    assert names == ["cartesia", "piper"]
    empty = tmp_path / "none"
    empty.mkdir()
    assert VoiceCatalog.load(shipped_dir=empty).providers() == []


# -- At session start ------------------------------------------------------------------


PERSONA_VOICES = {"cartesia": KATIE, "piper": "en_US-joe-medium"}


@pytest.mark.parametrize(
    ("preferences", "language", "voice"),
    [
        ({}, "en", KATIE),
        ({"voice": "British reading lady"}, "en", BRITISH_READING_LADY),
        ({"voice": "jaqueline"}, "en", "9626c31c-bec5-4cca-baa8-f8ba9e84c8bc"),
        ({"voice": "Gandalf"}, "en", KATIE),  # unknown name: the persona's voice
        (
            {"voice": "abcdef01-2345-6789-abcd-ef0123456789"},
            "en",
            "abcdef01-2345-6789-abcd-ef0123456789",
        ),
        ({"language": "es"}, "en", SPANISH_LADY),  # the caller speaks Spanish, chose no voice
        ({}, "es", SPANISH_LADY),  # a Spanish persona with an English voice
        ({"language": "es", "voice": "Katie"}, "en", KATIE),  # the caller's choice wins
    ],
)
def test_catalog_speech_style_resolves_names_and_picks_a_voice_for_the_language(
    catalog, preferences, language, voice
):
    style = catalog_speech_style(PERSONA_VOICES, language, preferences, "cartesia", catalog)
    assert style.voices["cartesia"] == voice
    assert style.voices["piper"] == "en_US-joe-medium"
    assert style.language == preferences.get("language", language)


def test_catalog_speech_style_keeps_an_operators_own_voice_and_piper(catalog):
    own = {"cartesia": "my-custom-voice"}
    assert catalog_speech_style(own, "en", {}, "cartesia", catalog).voices == own
    # An unknown preferred name and no persona voice: the service's configured default.
    assert catalog_speech_style({}, "en", {"voice": "Gandalf"}, "cartesia", catalog).voices == {}
    style = catalog_speech_style(PERSONA_VOICES, "en", {"voice": "Joe"}, "piper", catalog)
    assert style.voices["piper"] == "en_US-joe-medium"
    style = catalog_speech_style(PERSONA_VOICES, "en", {"voice": "Katie"}, "piper", catalog)
    assert style.voices["piper"] == "en_US-joe-medium"  # not a Piper voice


def test_language_switching_is_off_offline_with_a_clear_message(catalog):
    offline = language_switching("whisper", "piper", catalog)
    assert not offline.enabled
    assert "English only" in offline.message and "MINDBOT_DEEPGRAM_API_KEY" in offline.message
    piper = language_switching("deepgram", "piper", catalog)
    assert not piper.enabled and "piper voices speak English only" in piper.message
    cloud = language_switching("deepgram", "cartesia", catalog)
    assert cloud.enabled and {"en", "es", "ja"} <= set(cloud.languages)
    assert "\n" not in offline.message + piper.message + cloud.message
