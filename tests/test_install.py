"""The install stays as promised: no torch, the offline stack present, the layout importable."""

import importlib.util
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_the_lock_file_holds_no_torch():
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    names = {package["name"] for package in lock["package"]}
    assert not names & {"torch", "torchaudio", "torchvision", "nvidia-cudnn-cu12"}
    assert {"pipecat-ai", "llama-cpp-python", "faster-whisper", "piper-tts"} <= names


def test_torch_is_not_installed():
    assert importlib.util.find_spec("torch") is None


def test_imports_point_one_way():
    """mindbot imports neither pipelines nor processors; processors never import mindbot."""
    for path in (ROOT / "mindbot").rglob("*.py"):
        text = path.read_text()
        assert "import pipelines" not in text and "from pipelines" not in text, path
        assert "import processors" not in text and "from processors" not in text, path
    for path in (ROOT / "processors").rglob("*.py"):
        text = path.read_text()
        assert "mindbot" not in text.replace("MindBot", ""), path
