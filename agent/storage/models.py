"""The schema, in tortoise: portable SQL (SQLite now, PostgreSQL next), every row has its host."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class LogLine(Model):
    """One stored line. Order within a container is (timestamp_ns, id): Docker's, then arrival."""

    id = fields.BigIntField(primary_key=True)
    host = fields.CharField(max_length=255)
    container_id = fields.CharField(max_length=64)
    container_name = fields.CharField(max_length=255)
    stream = fields.CharField(max_length=8)
    timestamp_ns = fields.BigIntField()
    timestamp = fields.CharField(max_length=40)  # Docker's RFC 3339 text, exactly as sent
    message = fields.TextField()
    flags = fields.SmallIntField(default=0)

    class Meta:
        table = "log_lines"
        indexes = (("container_id", "timestamp_ns", "id"), ("timestamp_ns",))


# Column order of the hot-path INSERT; LogStorage builds rows in exactly this order.
LOG_LINE_COLUMNS = (
    "host",
    "container_id",
    "container_name",
    "stream",
    "timestamp_ns",
    "timestamp",
    "message",
    "flags",
)
