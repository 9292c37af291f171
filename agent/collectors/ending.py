"""How a followed stream ends: what is re-read, and what state the store shows.

The follow read has ended: the collector was stopped (a shutdown, or its container exited),
the container stopped, or it was removed. Each asks for a different re-read of what the
follow stream did not send, and this module is that decision; the stream's life is
`docker.DockerLogCollector`, its read loop `reading.StreamReader`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import anyio

from agent import gaps
from agent.batch import Source
from agent.collectors.reading import StreamReader
from agent.docker.client import DockerClient
from agent.docker.errors import ContainerNotFound, DockerError
from agent.docker.frames import FrameDecoder
from agent.docker.inspect import ContainerInfo
from agent.timestamps import TimestampError, parse_timestamp

log = logging.getLogger("logagent.collector")


class ContainerVanished(Exception):
    """The container was removed while its stream was being followed."""


async def after_follow(
    reader: StreamReader,
    client: DockerClient,
    info: ContainerInfo,
    decoder: FrameDecoder,
    *,
    stopped: bool,
    exited: bool,
    settled: bool,
    drain_timeout: float,
) -> None:
    """The re-read a follow stream's end calls for; raises ContainerVanished."""
    if stopped:
        # Stopped while the container runs: an open event may go on; it is left to the next
        # start, which reads it again from its first line. A shutdown drain has its budget
        # (none for a stream that stayed idle: `settled`); a dead container's rest is read as
        # long as it comes (the collector's stop() watches that it does).
        if exited or not settled:
            with anyio.move_on_after(math.inf if exited else drain_timeout):
                await reader.catch_up(client, info.tty, ended=exited)
        if exited:
            await reader.mark("exited")
        else:
            await reader.keep_open_events()
    elif not await _removed_after_exit(client, info, reader.source):
        await reader.catch_up(client, info.tty)
        await reader.mark("exited")
    else:
        await removed_with_rm(reader, decoder)


async def removed_with_rm(reader: StreamReader, decoder: FrameDecoder) -> None:
    """A --rm container removed after it exited: its stream had every line (dockerd sends
    its log to the end), unless Docker wrote an error into it ("Error grabbing logs: ... no
    such file", a review's burst of --rm containers): then a gap quotes it."""
    await reader.end_of(decoder)
    if reader.daemon_said is not None:
        last = reader.last_timestamp_ns
        await reader.gap(gaps.daemon_failed_then_removed(reader.daemon_said), last or None, None)
    await reader.mark("removed")


async def cut_by_removal(reader: StreamReader) -> None:
    """Docker broke the stream off as it removed the container, before it said the stream
    was finished: what it had not sent is lost, and a gap says so."""
    last = reader.last_timestamp_ns
    await reader.gap(gaps.cut_by_removal(last), last or None, None)
    await reader.mark("removed")


async def gone(client: DockerClient, container_id: str) -> bool:
    """Whether the container is removed (or on its way out); False if the daemon is away."""
    try:
        return (await client.inspect(container_id)).going
    except ContainerNotFound:
        return True
    except DockerError:  # away, or another answer (a 500): not known to be gone
        return False


async def _removed_after_exit(client: DockerClient, info: ContainerInfo, source: Source) -> bool:
    """A follow stream also ends when the container is removed.

    For a `--rm` container that is its normal end: True, and the stream had every line
    (but a last one without newline, which dockerd sends only on a plain read, and there
    is nothing left to read). Any other container removed mid-stream is an error.
    """
    if not await gone(client, source.container_id):
        return False  # (a daemon gone away: the catch-up's read will say so)
    if info.auto_remove:
        log.info(
            "%s (%s) was removed after it exited (--rm): its stream ended with it",
            source.container_name,
            source.container_id[:12],
        )
        return True
    raise ContainerVanished(
        f"container {source.container_name} ({source.container_id[:12]}) was removed "
        "while its logs were being followed"
    )


@dataclass
class Refollow:
    """Whether a follow stream that ended was cut short by Docker: its container runs on,
    the run the stream was opened on (a review saw dockerd end one on a fast rotation,
    "Error grabbing logs: ... no such file", and the container was marked exited and read
    no more). Then, after a pause, it is followed again from the position; the pause doubles
    (to 30 s) while a stream so opened brings nothing, so a daemon that ends every one at
    once is not asked in a loop. The same run: `running` (not restarting: a restart policy's
    next run is the reconciler's), started no later than the first stream was opened."""

    opened_ns: int = 0  # when the first follow stream was asked for (the wall clock)
    pause: float = 0.5
    lines_at: int = 0

    async def cut_short(self, client: DockerClient, reader: StreamReader) -> bool:
        try:
            now = await client.inspect(reader.source.container_id)
        except DockerError:
            return False  # the stream's end is the container's, or the daemon's: as before
        if now.status != "running" or not self.opened_ns:
            return False
        try:
            started_ns = parse_timestamp(now.started_at.encode())
        except TimestampError:
            return False
        if started_ns > self.opened_ns:
            return False  # a later run: its start event brings its own stream
        self.pause = 1.0 if reader.lines > self.lines_at else min(self.pause * 2, 30.0)
        self.lines_at = reader.lines
        log.warning(
            "%s: Docker ended the log stream of a running container; following it again "
            "from the stored position in %.0f s",
            reader.where(),
            self.pause,
        )
        await anyio.sleep(self.pause)
        return True
