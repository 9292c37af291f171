"""The inspect and listing answers, parsed once (agent/docker/inspect.py)."""

from __future__ import annotations

from agent.docker.inspect import ContainerInfo
from agent.docker.pacing import may_rest


def test_inspect_is_parsed_into_what_the_agent_uses() -> None:
    info = ContainerInfo.of(
        {
            "Id": "a" * 64,
            "Name": "/web",
            "Config": {
                "Image": "shop:1",
                "Tty": True,
                "Labels": {"com.docker.compose.project": "shop"},
            },
            "HostConfig": {"AutoRemove": True, "LogConfig": {"Config": {"max-size": "10m"}}},
            "State": {"Running": True, "Status": "running"},
        }
    )
    assert (info.id, info.name, info.image, info.tty, info.auto_remove) == (
        "a" * 64, "web", "shop:1", True, True,
    )  # fmt: skip
    assert (info.log_max_size, info.running, info.project, info.going) == (
        "10m",
        True,
        "shop",
        False,
    )


def test_missing_and_null_parts_are_defaults() -> None:
    info = ContainerInfo.of({"Id": "b" * 64, "Config": None, "HostConfig": {"LogConfig": None}})
    assert info.name == "b" * 12 and info.labels == {} and not info.tty and info.project is None
    assert may_rest(info)


def test_a_container_on_its_way_out_is_going() -> None:
    assert ContainerInfo.of({"Id": "c", "State": {"Status": "removing"}}).going
    assert ContainerInfo.of({"Id": "c", "State": {"Status": "dead"}}).going


def test_a_listing_has_a_shape_of_its_own() -> None:
    info = ContainerInfo.listed(
        {"Id": "d" * 64, "Names": ["/job"], "Image": "x", "Labels": None, "State": "exited",
         "Created": 1700000000}
    )  # fmt: skip
    assert (info.name, info.running, info.status, info.created_s) == (
        "job",
        False,
        "exited",
        1700000000,
    )
    assert ContainerInfo.listed({"Id": "e" * 64}).name == "e" * 12


def test_pacing_reads_the_parsed_log_size() -> None:
    assert not may_rest(ContainerInfo("f", "f", log_max_size="1m"))
    assert may_rest(ContainerInfo("f", "f", log_max_size="20m"))
    assert not may_rest(ContainerInfo("f", "f", log_max_size="odd"))
    assert not may_rest(ContainerInfo("f", "f", auto_remove=True))


def test_the_labels_kept_are_bounded_and_ours_are_never_pushed_out() -> None:
    many = {f"org.opencontainers.{i:03}": "x" * 300 for i in range(100)}
    info = ContainerInfo("c" * 64, "web", labels={**many, "logagent.alert.destinations": "ops",
                         "com.docker.compose.service": "web", "nul": "a\x00b"})  # fmt: skip
    kept = dict(info.kept_labels)
    assert len(kept) == 64 and kept["logagent.alert.destinations"] == "ops"
    assert kept["com.docker.compose.service"] == "web"
    assert all(len(v) <= 255 and "\x00" not in v for v in kept.values())
