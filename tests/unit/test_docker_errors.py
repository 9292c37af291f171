"""How the daemon's answers become the agent's errors (values in, exception classes out)."""

from __future__ import annotations

import aiodocker
import pytest

from agent.docker.errors import ContainerNotFound, DockerError, DockerUnavailable, LogsUnavailable
from agent.docker.translate import translate

REMOVING = "can not get logs from container which is dead or marked for removal"


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        (404, "No such container: abc", ContainerNotFound),
        (409, REMOVING, ContainerNotFound),  # a --rm container already on its way out
        (409, "container is paused", DockerError),
        (501, "configured logging driver does not support reading", LogsUnavailable),
        (900, "Cannot connect to Docker", DockerUnavailable),
        (500, "boom", DockerError),
    ],
)
def test_daemon_answers_map_to_agent_errors(
    status: int, message: str, expected: type[DockerError]
) -> None:
    error = translate(aiodocker.DockerError(status, message), "logs of abc")
    assert type(error) is expected
    assert message in str(error) and "logs of abc" in str(error)
