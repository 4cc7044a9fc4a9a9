"""MQTT topic layout, general to specific.

    vinsight/v1/data/<device_id>/samples     QoS 1  sample batches (binary or JSON)
    vinsight/v1/data/<device_id>/events      QoS 1  DTC changes, engine on/off, power events
    vinsight/v1/status/<device_id>/state     QoS 1, retained: "online" / "offline" (last will)
    vinsight/v1/status/<device_id>/health    QoS 0  adapter state, achieved signal rates, outbox
    vinsight/v1/status/<device_id>/config    QoS 1  acknowledgement of a configuration command
    vinsight/v1/cmd/<device_id>/config       QoS 1, retained: remote configuration for the device

The tree (data / status / cmd) comes before the device id so that broker ACLs and shared
subscriptions are a single pattern each: a device may write ``vinsight/v1/data/<its id>/#`` and
``vinsight/v1/status/<its id>/#`` and read ``vinsight/v1/cmd/<its id>/#``; ingest subscribes to
``$share/ingest/vinsight/v1/data/+/+``. The version segment lets a v2 fleet run beside v1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROOT = "vinsight"
VERSION = "v1"
PREFIX = f"{ROOT}/{VERSION}"

DATA = "data"
STATUS = "status"
CMD = "cmd"

SAMPLES = "samples"
EVENTS = "events"
STATE = "state"
HEALTH = "health"
CONFIG = "config"

# Device ids appear in topics, ACL patterns and file names: keep them to a safe alphabet.
DEVICE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{1,63}$")


class TopicError(ValueError):
    """A topic that is not part of the layout."""


def check_device_id(device_id: str) -> str:
    if not DEVICE_ID_RE.match(device_id):
        raise TopicError(
            f"device id {device_id!r} must be 2-64 characters of a-z, 0-9, '-' or '_' starting with a letter or digit"
        )
    return device_id


def samples(device_id: str) -> str:
    return f"{PREFIX}/{DATA}/{check_device_id(device_id)}/{SAMPLES}"


def events(device_id: str) -> str:
    return f"{PREFIX}/{DATA}/{check_device_id(device_id)}/{EVENTS}"


def state(device_id: str) -> str:
    return f"{PREFIX}/{STATUS}/{check_device_id(device_id)}/{STATE}"


def health(device_id: str) -> str:
    return f"{PREFIX}/{STATUS}/{check_device_id(device_id)}/{HEALTH}"


def config_ack(device_id: str) -> str:
    return f"{PREFIX}/{STATUS}/{check_device_id(device_id)}/{CONFIG}"


def config_command(device_id: str) -> str:
    return f"{PREFIX}/{CMD}/{check_device_id(device_id)}/{CONFIG}"


def data_filter() -> str:
    """Every device's data messages."""
    return f"{PREFIX}/{DATA}/+/+"


def status_filter() -> str:
    return f"{PREFIX}/{STATUS}/+/+"


def shared(group: str, topic_filter: str) -> str:
    """An MQTT v5 shared subscription: each message goes to one member of ``group``."""
    if not group or "/" in group or "+" in group or "#" in group:
        raise TopicError(f"invalid share group {group!r}")
    return f"$share/{group}/{topic_filter}"


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    tree: str
    device_id: str
    kind: str


_KINDS = {DATA: {SAMPLES, EVENTS}, STATUS: {STATE, HEALTH, CONFIG}, CMD: {CONFIG}}


def parse(topic: str) -> ParsedTopic:
    """Split a topic into tree, device id and kind; raise TopicError for anything else."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != ROOT:
        raise TopicError(f"topic {topic[:200]!r} is not under {PREFIX}/<tree>/<device>/<kind>")
    if parts[1] != VERSION:
        raise TopicError(f"topic version {parts[1][:20]!r} is not {VERSION}")
    tree, device_id, kind = parts[2], parts[3], parts[4]
    if tree not in _KINDS or kind not in _KINDS[tree]:
        raise TopicError(f"unknown topic kind {tree}/{kind}")
    check_device_id(device_id)
    return ParsedTopic(tree, device_id, kind)


# Mosquitto ACL patterns (``%u`` is the username, which provisioning sets to the device id).
DEVICE_ACL_PATTERNS: tuple[str, ...] = (
    f"pattern write {PREFIX}/{DATA}/%u/#",
    f"pattern write {PREFIX}/{STATUS}/%u/#",
    f"pattern read {PREFIX}/{CMD}/%u/#",
)
