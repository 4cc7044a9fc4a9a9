"""The README's main job runs headless and shows every vehicle; the CLI explains itself."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from device_agent.settings import AgentSettings

ROOT = Path(__file__).resolve().parent.parent


def test_demo_shows_every_vehicle_and_the_trouble_codes(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vinsight.cli", "demo", "--home", str(tmp_path / "demo"), "--duration", "40",
         "--replays", "2", "--replay-speed", "30"],
        capture_output=True, text=True, timeout=150,
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    counts = {dev: int(n) for dev, n in re.findall(r"(demo-[a-z]+-\d): (\d+) samples", out)}
    assert counts.get("demo-replay-1", 0) > 100 and counts.get("demo-replay-2", 0) > 100, out[-3000:]
    assert counts.get("demo-car-1", 0) > 5, out[-3000:]
    assert "demo-car-1: dtc_new P0301" in out and "demo-car-1: dtc_new P0171" in out
    assert "demo-car-1: vehicle_identified 1FA0ZZZ99ZTS39002" in out
    assert "demo: stopped" in out


def test_cli_help_explains_each_command() -> None:
    for args in ([], ["agent"], ["agent", "run"], ["agent", "replay"], ["agent", "status"], ["demo"]):
        result = subprocess.run([sys.executable, "-m", "vinsight.cli", *args, "--help"], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0 and "usage: vinsight" in result.stdout
    run_help = subprocess.run([sys.executable, "-m", "vinsight.cli", "agent", "run", "--help"], capture_output=True,
                              text=True, timeout=60).stdout
    assert "VINSIGHT_AGENT_OBD_PORT" in run_help and "socket://host:port" in run_help


def test_agent_env_example_documents_every_setting() -> None:
    example = (ROOT / "hardware" / "agent.env.example").read_text()
    for name in AgentSettings.model_fields:
        assert f"VINSIGHT_AGENT_{name.upper()}=" in example, name


def test_device_install_stays_light() -> None:
    """The Pi installs only the device extra: the agent must not import numpy or friends."""
    code = ("import sys, device_agent.agent, device_agent.obd_source, device_agent.gps, vinsight.cli; "
            "vinsight.cli.build_parser(); "
            "print(sorted(m for m in ('numpy', 'numba', 'pandas', 'geopandas', 'shapely') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip()
    assert out == "[]"
