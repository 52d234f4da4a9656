"""The package's front door: light imports, and every public name resolves."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import quart_chat
from quart_chat import _EXPORTS

#: What a client, a script or a pytest run without the fixture must not pay for.
SERVER_MODULES = ["quart", "hypercorn", "pluggy", "jwt", "prometheus_client", "quart_chat.app"]


def loaded_after(statement: str) -> list[str]:
    """The server modules a clean interpreter has loaded after running ``statement``."""
    code = (f"import json, sys\n{statement}\n"
            f"print(json.dumps([m for m in {SERVER_MODULES!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return list(json.loads(out.splitlines()[-1]))


@pytest.mark.parametrize("statement", [
    "import quart_chat",
    "import quart_chat.client",
    "from quart_chat import ChatClient, ChatError, Message, Settings, plugin_settings",
])
def test_importing_the_client_loads_no_server(statement):
    """A notebook that wants the client does not import Quart, hypercorn, pluggy, JWT,
    prometheus_client or the app."""
    assert loaded_after(statement) == []


def test_the_pytest_entry_point_loads_no_server():
    """Every pytest run where quart-chat is installed imports its pytest plugin (the
    pytest11 entry point); that costs no server import until a test asks for one."""
    loaded = loaded_after("import pytest, quart_chat.pytest_plugin")
    assert loaded == ["pluggy"]  # pytest's own


def test_the_server_still_loads_on_demand():
    """The lazy names really import the server when asked for."""
    assert loaded_after("from quart_chat import create_app") == SERVER_MODULES


def test_every_public_name_resolves():
    """Every name in __all__ is importable from the top level, and is no module (a
    submodule of the same name, like plugin_settings, must not shadow it)."""
    pytest.importorskip("ipywidgets")  # ChatWidget
    import quart_chat.plugins  # imports the plugin_settings submodule

    for name in quart_chat.__all__:
        value = getattr(quart_chat, name)
        assert not isinstance(value, type(quart_chat)), name
    assert set(quart_chat.__all__) == {"__version__", "plugin_settings", *_EXPORTS}
    assert set(quart_chat.__all__) <= set(dir(quart_chat))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = quart_chat.nope  # type: ignore[attr-defined]


def test_the_version_is_the_installed_one():
    """pyproject.toml reads the version from the package: one place to bump it."""
    from importlib.metadata import version

    assert quart_chat.__version__ == version("quart-chat")
