"""aiodocker's private API that agent/docker/client.py relies on, pinned by its signature.

`DockerClient._open_stream` calls `Docker._do_query(path, "GET", params=..., timeout=...)`
and reads the raw `aiohttp.ClientResponse` it returns. A new aiodocker that renames,
reorders or drops any of these fails here, not in production.
"""

from __future__ import annotations

import inspect

import aiodocker
import aiohttp


def test_do_query_takes_path_method_params_and_timeout() -> None:
    sig = inspect.signature(aiodocker.Docker._do_query)
    names = list(sig.parameters)
    assert names[:3] == ["self", "path", "method"]
    for keyword in ("params", "timeout"):
        assert sig.parameters[keyword].kind is inspect.Parameter.KEYWORD_ONLY
    assert "ClientResponse" in str(sig.return_annotation)


def test_do_query_is_a_coroutine_returning_the_raw_response() -> None:
    assert inspect.iscoroutinefunction(aiodocker.Docker._do_query)
    # The collector reads `response.content.readany()` (agent/collectors/docker.py, _read).
    assert inspect.iscoroutinefunction(aiohttp.StreamReader.readany)
    assert "content" in inspect.getsource(aiohttp.ClientResponse)


def test_api_version_is_settable_on_the_public_object() -> None:
    docker = aiodocker.Docker.__init__
    assert "api_version" in inspect.signature(docker).parameters
