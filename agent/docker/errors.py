"""The agent's Docker errors, and the one place aiodocker's and aiohttp's errors become them.

The class says what may happen next: `DockerUnavailable` is transient (reconnect and carry
on), every other `DockerError` is the daemon's answer about one container (not retried).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import aiodocker
import aiohttp

_CONNECT_FAILED = 900  # aiodocker's status for "could not reach the daemon"


class DockerError(Exception):
    """The daemon answered with an error, or could not be asked."""


class DockerUnavailable(DockerError):
    """Cannot connect to the daemon, or the connection was lost: worth reconnecting."""


class ContainerNotFound(DockerError):
    """No such container (404): it never existed or was removed."""


class LogsUnavailable(DockerError):
    """The container's log driver cannot be read through the API (501)."""


class BadReference(DockerError):
    """Not a container name or id: it would reach other parts of the Engine API."""


def translate(exc: aiodocker.DockerError, what: str) -> DockerError:
    if exc.status == _CONNECT_FAILED:
        return DockerUnavailable(f"{what}: {exc.message}")
    if exc.status == 404:
        return ContainerNotFound(f"{what}: {exc.message}")
    if exc.status == 409 and "removal" in str(exc.message):
        # "can not get logs from container which is dead or marked for removal": a --rm
        # container that exited before its stream opened; its log is going with it.
        return ContainerNotFound(f"{what}: {exc.message}")
    if exc.status == 501:
        return LogsUnavailable(f"{what}: {exc.message}")
    return DockerError(f"{what}: Docker answered {exc.status}: {exc.message}")


@contextmanager
def mapped(what: str) -> Iterator[None]:
    """Run a request; its failure leaves as the agent's error, naming `what`, cause chained."""
    try:
        yield
    except aiodocker.DockerError as exc:
        raise translate(exc, what) from exc
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as exc:
        raise DockerUnavailable(f"{what}: {exc!r}") from exc
