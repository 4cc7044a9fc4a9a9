"""24 h offline at 1 Hz, then reconnect: is every sample delivered, once, and how fast does it drain?

86,400 realistic samples (10 OBD signals + a GPS fix, from real drives, see _drive.py) are buffered
in the agent's outbox as a day without coverage leaves them, then the agent's publisher connects to
a Mosquitto of the bench's own and drains the backlog. A subscriber with a persistent session
decodes every batch with the contract and counts delivered, lost and duplicate (boot, seq) pairs.

Baseline, same run: the same samples pre-encoded in the same batches and published straight with
paho (QoS 1, no outbox, nothing deleted), i.e. what the drain would cost without durability.

    python bench/outbox_drain.py [--quick] [--samples 86400]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._drive import realistic_samples  # noqa: E402
from device_agent.outbox import Outbox  # noqa: E402
from device_agent.publisher import Publisher, PublisherConfig  # noqa: E402
from tests.device_agent.mqtt_helpers import PrivateBroker  # noqa: E402
from vinsight.contract import Sample, SampleBatch, codec, topics  # noqa: E402

BATCH = 60


class Counter:
    def __init__(self, port: int, device: str) -> None:
        self.seen: dict[tuple[str, int], int] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"count-{device}", protocol=mqtt.MQTTv5)
        self.client.on_message = self.on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.subscribe(topics.samples(device), qos=1)
        self.client.loop_start()

    def on_message(self, _c, _u, m) -> None:
        batch = codec.decode_samples(m.payload, getattr(m.properties, "ContentType", None))
        boot = str(batch.boot_id)
        with self.lock:
            for s in batch.seq:
                key = (boot, int(s))
                self.seen[key] = self.seen.get(key, 0) + 1

    def total(self) -> int:
        with self.lock:
            return sum(self.seen.values())

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def day_of_samples(n: int) -> list[Sample]:
    base = realistic_samples()
    start = int(time.time() * 1000) - n * 1000
    return [Sample(i, start + i * 1000, base[i % len(base)].values, {}) for i in range(n)]


def drain_with_outbox(samples: list[Sample], port: int, work: Path) -> tuple[int, int, int, int, float]:
    device = "drain-" + uuid.uuid4().hex[:8]
    boot = uuid.uuid4()
    counter = Counter(port, device)
    outbox = Outbox(work / "outbox.sqlite3", max_bytes=1 << 30)
    for i in range(0, len(samples), 3600):  # an hour per transaction while loading the backlog
        outbox.add_samples(boot, samples[i : i + 3600])
    stored = len(outbox)
    publisher = Publisher(PublisherConfig(device_id=device, port=port, batch_max_samples=BATCH, batch_max_age_s=30),
                          outbox, boot)
    stop = threading.Event()
    started = time.monotonic()
    publisher.start()
    runner = threading.Thread(target=publisher.run, args=(stop,), daemon=True)
    runner.start()
    while len(outbox) and time.monotonic() - started < 900:
        time.sleep(0.05)
    drained = time.monotonic() - started
    deadline = time.monotonic() + 30
    while counter.total() < stored and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    runner.join(5)
    publisher.stop(1)
    counter.stop()
    delivered = len(counter.seen)
    duplicates = counter.total() - delivered
    lost = sum(1 for s in samples if (str(boot), s.seq) not in counter.seen)
    outbox.close()
    return stored, delivered, lost, duplicates, drained


def drain_without_outbox(samples: list[Sample], port: int) -> float:
    device = "raw-" + uuid.uuid4().hex[:8]
    boot = uuid.uuid4()
    counter = Counter(port, device)
    payloads = [codec.encode_samples_binary(SampleBatch.from_samples(device, boot, samples[i : i + BATCH]))
                for i in range(0, len(samples), BATCH)]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(16)
    client.connect("127.0.0.1", port)
    client.loop_start()
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = codec.CT_SAMPLES_BINARY
    started = time.monotonic()
    infos = [client.publish(topics.samples(device), p, qos=1, properties=props) for p in payloads]
    for info in infos:
        info.wait_for_publish(60)
    elapsed = time.monotonic() - started
    client.loop_stop()
    client.disconnect()
    counter.stop()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one hour (3,600 samples) instead of a day")
    parser.add_argument("--samples", type=int, default=86_400)
    args = parser.parse_args()
    n = 3600 if args.quick else args.samples
    samples = day_of_samples(n)
    with tempfile.TemporaryDirectory() as tmp:
        broker = PrivateBroker(Path(tmp) / "broker").start()
        try:
            stored, delivered, lost, duplicates, drained = drain_with_outbox(samples, broker.port, Path(tmp))
            raw = drain_without_outbox(samples, broker.port)
        finally:
            broker.stop()
    print(f"baseline: the same batches published without the outbox in {raw:.1f} s "
          f"({n / raw:.0f} samples/s); with the outbox {n / drained:.0f} samples/s, ratio {raw / drained:.2f}")
    print(f"stored={stored} delivered={delivered} lost={lost} duplicates={duplicates} drain_s={drained:.1f}")


if __name__ == "__main__":
    main()
