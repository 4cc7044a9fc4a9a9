"""Bytes on the wire per sample: the agent's batches versus one JSON object per sample.

Workload: every real POLIDriving drive (10 OBD signals + a GPS fix per 1 Hz sample, see _drive.py),
cut into batches of the agent's default size (60 samples) and encoded exactly as the publisher does.
Baseline: what a naive agent publishes, one JSON object per sample
({"device_id", "boot_id", "seq", "ts", <signal>: value, ...}), one MQTT message each.

Both figures include the MQTT PUBLISH framing (fixed header, topic, packet id, properties: the
binary batches carry the v5 content-type property, the naive JSON none), because that is what the
car's data plan pays for. The payload-only figures are printed too. The median over batches is used.

    python bench/wire_size.py [--quick] [--batch 60]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._drive import realistic_samples
from vinsight.contract import SampleBatch, codec, topics

DEVICE = "car-0001"


def _varint_len(n: int) -> int:
    size = 1
    while n > 0x7F:
        n >>= 7
        size += 1
    return size


def mqtt_publish_bytes(topic: str, payload_len: int, content_type: str | None) -> int:
    """Size of an MQTT v5 QoS 1 PUBLISH packet."""
    props = 0 if content_type is None else 1 + 2 + len(content_type)
    variable = 2 + len(topic.encode()) + 2 + _varint_len(props) + props
    remaining = variable + payload_len
    return 1 + _varint_len(remaining) + remaining


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one drive excerpt only")
    parser.add_argument("--batch", type=int, default=60, help="samples per batch (the agent's default: 60)")
    args = parser.parse_args()
    samples = realistic_samples(limit=3000 if args.quick else None)
    boot = uuid.uuid4()
    topic = topics.samples(DEVICE)
    per_batch_wire, per_batch_payload = [], []
    for i in range(0, len(samples) - args.batch + 1, args.batch):
        chunk = samples[i : i + args.batch]
        payload = codec.encode_samples_binary(SampleBatch.from_samples(DEVICE, boot, chunk))
        per_batch_payload.append(len(payload) / len(chunk))
        per_batch_wire.append(mqtt_publish_bytes(topic, len(payload), codec.CT_SAMPLES_BINARY) / len(chunk))
    json_payload, json_wire = [], []
    naive_topic = f"vinsight/{DEVICE}/telemetry"
    for s in samples:
        doc = {"device_id": DEVICE, "boot_id": str(boot), "seq": s.seq, "ts": s.ts_ms, **s.values}
        n = len(json.dumps(doc, separators=(",", ":")))
        json_payload.append(n)
        json_wire.append(mqtt_publish_bytes(naive_topic, n, None))
    b, j = statistics.median(per_batch_wire), statistics.median(json_wire)
    bp, jp = statistics.median(per_batch_payload), statistics.median(json_payload)
    print(f"samples={len(samples)} batches={len(per_batch_wire)} batch_size={args.batch}")
    print(f"payload only: binary_bytes_per_sample={bp:.1f} json_bytes_per_sample={jp:.1f} ratio={jp / bp:.1f}")
    print(f"wire_bytes_per_sample={b:.1f} json_bytes_per_sample={j:.1f} ratio={j / b:.1f}")


if __name__ == "__main__":
    main()
