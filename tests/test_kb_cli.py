"""`mindbot kb ...` and `mindbot bench kb`, as a user runs them."""

from pathlib import Path

import pytest

from mindbot.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "kb"


def test_add_list_search_remove(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("MINDBOT_DATA_DIR", str(tmp_path))
    main(["kb", "add", str(FIXTURES / "corpus" / "travel-policy.md")])
    assert "1 added" in capsys.readouterr().out
    main(["kb", "list"])
    assert "Business Travel Policy" in capsys.readouterr().out
    main(["kb", "search", "hotel", "limit", "in", "Boston"])
    assert "Nightly Rate Limits" in capsys.readouterr().out
    main(["kb", "remove", "travel-policy.md"])
    main(["kb", "list"])
    assert "Business Travel Policy" not in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["kb", "remove", "no-such-document"])
    assert exit_.value.code == 1


def test_a_bad_file_is_skipped_and_the_rest_ingested(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("MINDBOT_DATA_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "kb",
                "add",
                str(FIXTURES / "bad" / "corrupt.pdf"),
                str(FIXTURES / "corpus" / "travel-policy.md"),
            ]
        )
    out = capsys.readouterr()
    assert exit_.value.code == 1 and "corrupt.pdf" in out.out + out.err
    main(["kb", "list"])
    assert "Business Travel Policy" in capsys.readouterr().out


def test_the_benchmark_short_mode(monkeypatch, tmp_path, capsys):
    main(["bench", "kb", "--chunks", "500", "--json", str(tmp_path / "kb.json")])
    out = capsys.readouterr().out
    assert "hit@3" in out and "small talk retrieving nothing 8/8" in out
    assert "search at 500 chunks" in out
