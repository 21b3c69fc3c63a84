"""The background API process the demo leaves running: start is idempotent, stop stops it."""

from __future__ import annotations

import json
import socket
import urllib.request

import pytest

from cxp.core.config import ApiSettings, StackSettings
from cxp.stack.api_process import api_url, start_api, stop_api
from cxp.store.apikeys import create_key
from cxp.store.db import connect

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_start_serve_and_stop(stack, tmp_path) -> None:
    settings = stack.model_copy(update={"api": ApiSettings(port=_free_port()),
                                        "stack": StackSettings(dir=tmp_path)})
    url = start_api(settings)
    assert url == api_url(settings)
    pid = (tmp_path / "api.pid").read_text()
    assert start_api(settings) == url and (tmp_path / "api.pid").read_text() == pid, "second start reuses it"
    with connect(settings.db) as conn:
        token = create_key(conn, name="process test", role="product").token
    request = urllib.request.Request(f"{url}/v1/experience/voice", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200 and "overall" in json.loads(response.read())
    assert stop_api(settings) is True
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", settings.api.port), timeout=1):
        pass
    assert stop_api(settings) is False
