"""The deploy files promise no more than they give: checked as text, and by systemd itself."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_the_image_runs_as_a_user_not_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")


def test_compose_drops_what_the_agent_does_not_need() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    for needed in (
        "cap_drop: [ALL]",
        "no-new-privileges:true",
        "read_only: true",
        "mem_limit:",
        'user: "10001"',
        "group_add:",
        "/run/logagent:mode=0700",
        "network_mode: none",
    ):
        assert needed in text, needed
    # A socket mount is never read-only: the file must not claim it is.
    assert "docker.sock:ro" not in text


def test_the_unit_is_confined_and_has_its_runtime_directory() -> None:
    text = (DEPLOY / "logagent.service").read_text()
    for needed in (
        "RuntimeDirectory=logagent",
        "UMask=0077",
        "MemoryMax=",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
        "LOGAGENT_API_SOCKET=/run/logagent/agent.sock",
        "RestartPreventExitStatus=2",
    ):
        assert needed in text, needed


def test_systemd_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing: .ci/run installs systemd")
        pytest.skip("no systemd-analyze here")
    unit = tmp_path / "logagent.service"
    text = (DEPLOY / "logagent.service").read_text()
    # The venv is not installed here: the command is checked for existence, so use one that is.
    unit.write_text(re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", text, flags=re.M))
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done
