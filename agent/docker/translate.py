"""The one place aiodocker's and aiohttp's errors become the agent's (agent/docker/errors.py)."""

from __future__ import annotations

import aiodocker
import aiohttp

from agent.docker.errors import ContainerNotFound, DockerError, DockerUnavailable, LogsUnavailable

_CONNECT_FAILED = 900  # aiodocker's status for "could not reach the daemon"


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


_LOST = (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError)


class mapped:  # lower case: used as the function it was (`with mapped("GET /events"):`)
    """Run a request; its failure leaves as the agent's error, naming `what`, cause chained.

    A class, not a generator: a log stream enters it once per read, and one instance may be
    entered again and again (it keeps no state).
    """

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            return
        if isinstance(exc, aiodocker.DockerError):
            raise translate(exc, self.what) from exc
        if isinstance(exc, _LOST):
            raise DockerUnavailable(f"{self.what}: {exc!r}") from exc
