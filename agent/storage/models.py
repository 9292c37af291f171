"""The schema, in tortoise: portable SQL (SQLite now, PostgreSQL next), every row has its host."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model

NAME_MAX = 255  # the width of the name columns: a name or label longer is cut to it


def fit(name: str | None) -> str | None:
    """A name as its column holds it: anyone who runs a container picks its name and its
    compose labels, and PostgreSQL refuses a longer value (the whole commit with it)."""
    if name is None:
        return None
    name = no_nul(name)  # a label may hold a NUL
    return name if len(name) <= NAME_MAX else name[:NAME_MAX]


def no_nul(text: str) -> str:
    """Text a column of either store can hold: PostgreSQL's text cannot hold a NUL."""
    return text.replace("\x00", "\ufffd")


class LogLine(Model):
    """One stored line. Order within a container is (timestamp_ns, id): Docker's, then arrival.

    Its container is `source_id`, the id of the container's `ContainerCursor` row (which holds
    the 64-character id and the name once): an integer key makes each row ~30 bytes smaller
    and keeps the per-container index small enough that committing lines of 100 containers
    at once costs about 4.4 µs a row instead of 7.2 (bench/sqlite_rows.py).
    """

    id = fields.BigIntField(primary_key=True)
    host = fields.CharField(max_length=255)
    source_id = fields.IntField()  # ContainerCursor.id
    stream = fields.CharField(max_length=8)
    timestamp_ns = fields.BigIntField()
    # Docker's RFC 3339 text as sent, or "" when it is Docker's own UTC spelling of
    # timestamp_ns (nearly every line): the read side derives it (agent/timestamps.py).
    timestamp = fields.CharField(max_length=40)
    message = fields.TextField()
    flags = fields.SmallIntField(default=0)
    # trace 1 … fatal 6 (agent/shaping/levels.py), NULL when the line says none. Its index
    # is partial, warn and above only (agent/storage/schema.py): rare rows, cheap to keep.
    level = fields.SmallIntField(null=True)

    class Meta:
        table = "log_lines"
        indexes = (("source_id", "timestamp_ns", "id"), ("timestamp_ns",))


# Column order of the hot-path INSERT; LogStorage builds rows in exactly this order.
LOG_LINE_COLUMNS = (
    "host",
    "source_id",
    "stream",
    "timestamp_ns",
    "timestamp",
    "message",
    "flags",
    "level",
)


class ContainerCursor(Model):
    """A container of a host: its id and name, and where it was read up to.

    The row is created before the container's first line is stored (its `id` is the lines'
    `source_id`); the position is committed in the same transaction as the rows.

    Per stream: Docker's timestamp of the last stored line and how many stored lines carry
    exactly that timestamp (see agent/cursor.py).
    """

    id = fields.IntField(primary_key=True)
    host = fields.CharField(max_length=255)
    container_id = fields.CharField(max_length=64)
    container_name = fields.CharField(max_length=255)
    stdout_ts = fields.BigIntField(null=True)
    stdout_n = fields.IntField(default=0)
    stderr_ts = fields.BigIntField(null=True)
    stderr_n = fields.IntField(default=0)
    tty_ts = fields.BigIntField(null=True)
    tty_n = fields.IntField(default=0)
    lines = fields.BigIntField(default=0)  # stored so far (retention subtracts what it prunes)
    bytes = fields.BigIntField(default=0)
    updated_ns = fields.BigIntField()
    # The container's own retention (label logagent.retention), seconds; 0 keeps its lines
    # for ever; NULL: the config's retention.max_age.
    max_age_s = fields.BigIntField(null=True)
    # For the viewer: its compose project, and running / exited / removed as last seen.
    project = fields.CharField(max_length=255, null=True)
    state = fields.CharField(max_length=16, null=True)
    # The names it had before `docker rename`s, each followed by a newline (no Docker name
    # holds one): `logs OLDNAME` still finds its history.
    former_names = fields.TextField(null=True)
    # What it was run as and with (an alert rule selects by them, also once it is gone): its
    # image, compose service, and labels as a JSON object (docker/inspect.py bounds them).
    image = fields.CharField(max_length=255, null=True)
    service = fields.CharField(max_length=255, null=True)
    labels = fields.TextField(null=True)

    class Meta:
        table = "container_cursors"
        unique_together = (("host", "container_id"),)


class AgentState(Model):
    """This host's agent: when it was last alive and the last Docker event it handled."""

    host = fields.CharField(max_length=255, primary_key=True)
    last_seen_ns = fields.BigIntField()
    last_event_ns = fields.BigIntField(null=True)
    last_shutdown_ns = fields.BigIntField(null=True)
    # Its retention.max_age in whole seconds (0: none), set by its retention passes: any
    # agent may drop a whole day whose rows every owner's retention lets go.
    retention_s = fields.BigIntField(null=True)

    class Meta:
        table = "agent_state"


class HostCommit(Model):
    """Per host, the id of the last row its writer committed, set in that commit.

    One writer per host commits one transaction at a time, so a host's row ids grow in commit
    order; across hosts they do not. A follower reads a host's rows up to this id only, and
    never passes over a row whose transaction was still open (agent/storage/follow.py).
    """

    host = fields.CharField(max_length=255, primary_key=True)
    last_id = fields.BigIntField()
    at_ns = fields.BigIntField()
    # How many commits the host's writer made here: each commit checks it and adds one, so a
    # store that lost acknowledged commits (failed over, restored) is seen, never written
    # over (storage/generation.py). NULL: none since layout 12.
    commits = fields.BigIntField(null=True)
    # The host's writer sessions, newest last (JSON [[epoch, last id when it began], ...],
    # bounded): a follower that read under an older one rewinds to what the store held then.
    sessions = fields.TextField(null=True)

    class Meta:
        table = "host_commits"


class ConsumerPosition(Model):
    """Where a part that follows the committed store (an alert rule, a forwarder) stands:
    its `follow.Position`, committed by the consumer itself, in the transaction that records
    what it did with the rows (storage/consumers.py)."""

    name = fields.CharField(max_length=64, primary_key=True)
    position = fields.TextField()  # Position.token()
    updated_ns = fields.BigIntField()

    class Meta:
        table = "consumer_positions"


RATE_GAP = "rate"  # Gap.kind of a rate limit's span of drops


class Gap(Model):
    """Lines known to be lost for good, and why: never silently."""

    id = fields.IntField(primary_key=True)
    host = fields.CharField(max_length=255)
    container_id = fields.CharField(max_length=64)
    container_name = fields.CharField(max_length=255)
    reason = fields.TextField()
    from_ns = fields.BigIntField(null=True)
    to_ns = fields.BigIntField(null=True)
    created_ns = fields.BigIntField()
    # What kind of gap, for code to decide by (the reason is for people): "rate" for a rate
    # limit's span of drops, replaced as it grows; NULL for lines lost.
    kind = fields.CharField(max_length=16, null=True)

    class Meta:
        table = "gaps"
        indexes = (("container_id",),)


class ContainerEvent(Model):
    """A container's life as Docker's /events told it (docker/life_events.py), stored once:
    a replay of the same event (an agent restart resumes the events a little early) meets
    the unique key and is not stored again."""

    id = fields.BigIntField(primary_key=True)
    host = fields.CharField(max_length=255)
    container_id = fields.CharField(max_length=64)
    container_name = fields.CharField(max_length=255)
    time_ns = fields.BigIntField()  # Docker's timeNano
    action = fields.CharField(max_length=16)
    exit_code = fields.IntField(null=True)
    detail = fields.CharField(max_length=16, null=True)

    class Meta:
        table = "container_events"
        unique_together = (("host", "container_id", "time_ns", "action"),)
        # (host, id): the alert rules' page of this host's events after their position, at
        # each step; through the unique key it sorted every event of the host (7 ms at
        # 84,000, a busy CI host's week).
        indexes = (("time_ns",), ("host", "id"))


class AlertOutbox(Model):
    """An alert to deliver, one row per destination: committed as pending with the rules'
    state and position (agent/alerts/), then sent, then marked sent."""

    id = fields.BigIntField(primary_key=True)
    alert_id = fields.CharField(max_length=32)  # the idempotency key a receiver sees
    destination = fields.CharField(max_length=64)
    host = fields.CharField(max_length=255)
    rule = fields.CharField(max_length=64)
    payload = fields.TextField()
    created_ns = fields.BigIntField()
    status = fields.CharField(max_length=8)  # pending, sent
    attempts = fields.IntField()
    next_ns = fields.BigIntField()  # not tried again before this
    last_error = fields.CharField(max_length=255, null=True)
    sent_ns = fields.BigIntField(null=True)

    class Meta:
        table = "alert_outbox"
        unique_together = (("alert_id", "destination"),)
        indexes = (("host", "status", "next_ns"),)


class AlertState(Model):
    """The alert rules' state (windows, cooldowns) as of its consumer's position."""

    name = fields.CharField(max_length=64, primary_key=True)
    state = fields.TextField()
    updated_ns = fields.BigIntField()

    class Meta:
        table = "alert_state"


class Prune(Model):
    """What retention deleted, when and why: pruning is never silent either."""

    id = fields.IntField(primary_key=True)
    host = fields.CharField(max_length=255)
    reason = fields.CharField(max_length=32)  # max_age or max_bytes
    rows = fields.BigIntField()
    oldest_kept_ns = fields.BigIntField(null=True)
    at_ns = fields.BigIntField()

    class Meta:
        table = "prunes"


class SchemaVersion(Model):
    """The layout this store is in (agent/storage/schema.py), one row: a newer logagent's
    store is refused by an older one instead of being misread."""

    id = fields.IntField(primary_key=True)
    version = fields.IntField()

    class Meta:
        table = "schema_version"


class _Counts(Model):
    """Lines of a container, stream and level (0: none) in a span of time (`minute`: its
    first), committed with the lines and taken off with them (agent/storage/counts.py)."""

    id = fields.BigIntField(primary_key=True)
    host = fields.CharField(max_length=255)
    source_id = fields.IntField()  # ContainerCursor.id
    minute = fields.BigIntField()  # Docker's timestamp // 60 s, toward zero
    stream = fields.CharField(max_length=8)
    level = fields.SmallIntField()
    n = fields.BigIntField()

    class Meta:
        abstract = True


class LineCount(_Counts):
    """Lines per minute: what a histogram of hours reads."""

    class Meta:
        table = "line_counts"
        unique_together = (("source_id", "minute", "stream", "level"),)
        indexes = (("minute",),)


class LineCountHourly(_Counts):
    """The same per hour: a histogram of months reads 24 rows a day, not 1,440."""

    class Meta:
        table = "line_counts_hourly"
        unique_together = (("source_id", "minute", "stream", "level"),)
        indexes = (("minute",),)
