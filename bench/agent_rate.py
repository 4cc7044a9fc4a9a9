"""Signals read per second: the agent's scheduler versus python-obd's Async watch loop.

Both read the same 10 signals from the same ELM327-emulator setup (scenario car, answer delay
0.05 s like a real adapter, a fresh emulator per run, over TCP with baudrate 38400), for the same
time, in the same run; the figure is the median of several alternating runs. The agent is asked for
far more than the adapter can give (50 Hz per signal), so it reads as fast as its scheduler can;
python-obd's Async watches the same commands with its defaults (one PID per request, 0.25 s pause
between rounds). Only answered reads count. Connection set-up is excluded from both.

A property of ELM327-emulator 4.0.0 bounds this ratio: it sleeps its delay once per request AND
once more for every PID inside a multi-PID request, so on the stock emulator the best any client
can do is one PID per request, about 1 / 0.052 s = 19 reads/s, against Async's 10 / (10 x 0.052 s
+ 0.25 s) = 13 reads/s (ratio <= 1.5). A real ECU answers a multi-PID request within one response
time (SAE J1979 P2), which is why the agent packs PIDs when that is cheaper; it measures both at
identification and picks. The second figure therefore runs the same emulator with per-request
timing (the delay applied once per request, as a real adapter and ECU behave); it is printed for
information, and the last line is the stock emulator.

    python bench/agent_rate.py [--quick] [--seconds 15] [--runs 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import obd

from device_agent.obd_source import ObdSource
from device_agent.settings import AgentSettings
from tests.device_agent.conftest import CollectingSink, Emulator
from vinsight.contract import SignalPlan
from vinsight.contract.signals import BY_NAME

SIGNALS = ["speed", "rpm", "engine_load", "throttle_pos", "coolant_temp", "intake_temp", "maf", "intake_pressure",
           "timing_advance", "control_module_voltage"]
DELAY_S = 0.05


class per_request_timing:
    """Make the emulator answer a multi-PID request in one delay, like a real ECU."""

    def __enter__(self) -> None:
        from elm import Elm

        self.original = Elm.multi_pid_answer

        def multi_pid_answer(emulator, cmd, header):
            delay, emulator.delay = emulator.delay, 0
            try:
                return self.original(emulator, cmd, header)
            finally:
                emulator.delay = delay

        Elm.multi_pid_answer = multi_pid_answer

    def __exit__(self, *exc: object) -> None:
        from elm import Elm

        Elm.multi_pid_answer = self.original


def agent_reads_per_s(seconds: float) -> float:
    emu = Emulator(delay=DELAY_S).start()
    try:
        sink = CollectingSink()
        with tempfile.TemporaryDirectory() as state:
            settings = AgentSettings(obd_port=emu.url, obd_baudrate=38400, state_dir=Path(state))
            plans = {name: SignalPlan(50.0, 1) for name in SIGNALS}
            source = ObdSource(settings, sink, dtc_interval_s=1e9, plans=plans)
            stop = threading.Event()
            thread = threading.Thread(target=source.run, args=(stop,), daemon=True)
            thread.start()
            if not sink.wait(lambda s: len(s.readings) > 0, 60):
                raise RuntimeError("the agent read nothing from the emulator")
            start_count, start = len(sink.readings), time.monotonic()
            time.sleep(seconds)
            count, elapsed = len(sink.readings) - start_count, time.monotonic() - start
            stop.set()
            thread.join(15)
        return count / elapsed
    finally:
        emu.stop()


def async_reads_per_s(seconds: float) -> float:
    emu = Emulator(delay=DELAY_S).start()
    try:
        connection = obd.Async(emu.url, baudrate=38400)
        answered = [0]
        lock = threading.Lock()

        def count(response: obd.OBDResponse) -> None:
            if not response.is_null():
                with lock:
                    answered[0] += 1

        for name in SIGNALS:
            connection.watch(obd.commands[BY_NAME[name].obd_command], callback=count)
        connection.start()
        deadline = time.monotonic() + 60
        while answered[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        start_count, start = answered[0], time.monotonic()
        time.sleep(seconds)
        total, elapsed = answered[0] - start_count, time.monotonic() - start
        connection.stop()
        connection.close()
        return total / elapsed
    finally:
        emu.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one short run of each")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    for name in ("obd", "elm", "root"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    runs, seconds = (1, 5.0) if args.quick else (args.runs, args.seconds)
    with per_request_timing():
        ours = [agent_reads_per_s(seconds) for _ in range(runs)]
        theirs = [async_reads_per_s(seconds) for _ in range(runs)]
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"per-request ECU timing: agent_reads_per_s={a:.1f} async_reads_per_s={b:.1f} ratio={a / b:.2f}")
    ours, theirs = [], []
    for i in range(runs):
        ours.append(agent_reads_per_s(seconds))
        theirs.append(async_reads_per_s(seconds))
        print(f"stock emulator run {i + 1}: agent {ours[-1]:.1f}/s, python-obd Async {theirs[-1]:.1f}/s", flush=True)
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"agent_reads_per_s={a:.1f} async_reads_per_s={b:.1f} ratio={a / b:.2f}")


if __name__ == "__main__":
    main()
