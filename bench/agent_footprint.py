"""Peak RSS and CPU of the agent process at 10 signals / 1 Hz, publishing to the local broker.

Set-up, all real: the ELM327-emulator in its own process (scenario car, 0.05 s answer delay); an NMEA
receiver simulated on a pty at 1 Hz (GGA+RMC+GSA, positions from a real drive); the agent started
as `vinsight agent run` exactly as systemd would, with its plan set by a retained remote
configuration to 10 OBD signals at 1 Hz (everything else off); Mosquitto on 127.0.0.1:1883.
After a warm-up, CPU is measured over the window as (user+system CPU seconds) / wall seconds of
the agent process, and RSS is sampled every second (peak reported). Baseline for scale: an idle
Python interpreter's RSS, measured in the same run.

    python bench/agent_footprint.py [--quick] [--seconds 60]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import pty
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.device_agent.test_gps import drive_epochs, nmea_epoch  # noqa: E402
from vinsight.contract import AgentConfig, SignalPlan, codec, topics  # noqa: E402
from vinsight.contract.signals import OBD_SIGNALS  # noqa: E402
from vinsight.embedded import free_port, wait_for_port  # noqa: E402

SIGNALS = ["speed", "rpm", "engine_load", "throttle_pos", "coolant_temp", "intake_temp", "maf", "intake_pressure",
           "timing_advance", "control_module_voltage"]
EMULATOR = """
import signal, sys, time
sys.path.insert(0, {root!r})
from vinsight.emulated_car import Emulator
emu = Emulator(port={port}, delay=0.05).start()
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
while True:
    time.sleep(1)
"""


def feed_nmea(master: int, stop: threading.Event) -> None:
    epochs = drive_epochs(10_000)
    i = 0
    while not stop.is_set():
        _t, la, lo, alt, kn = epochs[i % len(epochs)]
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        try:
            os.write(master, nmea_epoch(now, la, lo, alt, kn, 45.0).encode())
        except OSError:
            return
        i += 1
        stop.wait(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a 15 s window")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--mqtt-port", type=int, default=1883)
    args = parser.parse_args()
    window = 15.0 if args.quick else args.seconds
    device = "bench-" + uuid.uuid4().hex[:8]
    port = free_port()
    emulator = subprocess.Popen([sys.executable, "-c", EMULATOR.format(root=str(ROOT), port=port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    master, slave = pty.openpty()
    stop = threading.Event()
    feeder = threading.Thread(target=feed_nmea, args=(master, stop), daemon=True)
    cloud = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    cloud.connect("127.0.0.1", args.mqtt_port)
    cloud.loop_start()
    plans = {s.name: SignalPlan(0.0, 9) for s in OBD_SIGNALS}
    plans.update({name: SignalPlan(1.0, 1) for name in SIGNALS})
    plans["battery_voltage"] = SignalPlan(0.0, 9)
    config = AgentConfig(version=1, signals=plans)
    cloud.publish(topics.config_command(device), codec.encode_config(config), qos=1, retain=True).wait_for_publish(5)
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    time.sleep(1)
    idle_rss = psutil.Process(idle.pid).memory_info().rss / 2**20
    idle.wait()
    agent = None
    try:
        wait_for_port("127.0.0.1", port, 20)
        feeder.start()
        with tempfile.TemporaryDirectory() as state:
            env = dict(os.environ, VINSIGHT_AGENT_DEVICE_ID=device, VINSIGHT_AGENT_STATE_DIR=state,
                       VINSIGHT_AGENT_OBD_PORT=f"socket://127.0.0.1:{port}", VINSIGHT_AGENT_OBD_BAUDRATE="38400",
                       VINSIGHT_AGENT_GPS_MODE="nmea", VINSIGHT_AGENT_NMEA_PORT=os.ttyname(slave),
                       VINSIGHT_AGENT_MQTT_PORT=str(args.mqtt_port))
            agent = subprocess.Popen([sys.executable, "-m", "vinsight.cli", "--log-level", "WARNING", "agent", "run"],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            proc = psutil.Process(agent.pid)
            peak = 0.0
            warmup_end = time.monotonic() + 12
            while time.monotonic() < warmup_end:
                peak = max(peak, proc.memory_info().rss)
                time.sleep(0.5)
            cpu0, t0 = proc.cpu_times(), time.monotonic()
            while time.monotonic() - t0 < window:
                peak = max(peak, proc.memory_info().rss)
                time.sleep(1.0)
            cpu1, t1 = proc.cpu_times(), time.monotonic()
            peak = max(peak, proc.memory_info().rss)
            cpu_pct = 100 * ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / (t1 - t0)
            agent.send_signal(signal.SIGTERM)
            agent.wait(30)
    finally:
        stop.set()
        if agent is not None and agent.poll() is None:
            agent.kill()
        emulator.terminate()
        emulator.wait(10)
        cloud.publish(topics.config_command(device), b"", qos=1, retain=True).wait_for_publish(5)
        cloud.loop_stop()
        os.close(master)
        os.close(slave)
    print(f"baseline: idle python3 rss_mb={idle_rss:.1f}; window={window:.0f} s")
    print(f"rss_mb={peak / 2**20:.1f} cpu_pct={cpu_pct:.2f}")


if __name__ == "__main__":
    main()
