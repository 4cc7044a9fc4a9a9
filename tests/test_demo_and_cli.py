"""The README's main job runs headless and shows every vehicle; the CLI explains itself."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from device_agent.settings import AgentSettings

ROOT = Path(__file__).resolve().parent.parent


def test_demo_shows_every_vehicle_and_the_trouble_codes(tmp_path) -> None:
    """The fleet side alone (--no-cloud): the portal side is tests/test_demo_portal.py."""
    result = subprocess.run(
        [sys.executable, "-m", "vinsight.cli", "demo", "--home", str(tmp_path / "demo"), "--duration", "40",
         "--replays", "2", "--replay-speed", "30", "--no-cloud", "--vehicles", "0"],
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


def test_device_side_runs_without_the_server_stack() -> None:
    """The Pi installs only the device extra: with numpy, numba, pandas, geopandas and shapely made
    unimportable, the agent still imports, its CLI builds, and the codec round-trips a batch."""
    code = """
import sys, importlib.abc, uuid
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('numpy', 'numba', 'pandas', 'geopandas', 'shapely', 'psycopg', 'fastapi'):
            raise ImportError('not on the car: ' + name)
sys.meta_path.insert(0, Block())
import device_agent.agent, device_agent.obd_source, device_agent.gps, vinsight.cli
vinsight.cli.build_parser()
from vinsight.contract import Sample, SampleBatch, codec
b = SampleBatch.from_samples('car-1', uuid.uuid4(), [Sample(i, i * 1000, {'speed': 10.0 + i}) for i in range(5)])
d = codec.decode_samples_binary(codec.encode_samples_binary(b))
assert [s.values['speed'] for s in d.samples()] == [10.0, 11.0, 12.0, 13.0, 14.0]
print('ok')
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "ok", result.stderr[-2000:]


def test_device_extra_declares_nothing_heavy() -> None:
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    heavy = ("numpy", "numba", "pandas", "geopandas", "shapely", "psycopg", "scikit-learn", "fastapi")
    assert not [d for d in extras["device"] if d.split("[")[0].split(">")[0].split("=")[0] in heavy]
