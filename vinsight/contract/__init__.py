"""The wire contract between car and cloud: signals, topics, messages and their encodings.

Both the device agent and the server import this package and nothing else to agree on the wire.
It depends only on the standard library (numpy is used for faster decoding when present).
"""

from . import codec, signals, topics, validation
from .errors import DecodeReason, WireDecodeError, WireEncodeError
from .messages import (
    AgentConfig,
    ConfigAck,
    ConnectionState,
    DeviceHealth,
    DeviceState,
    DtcType,
    Event,
    EventBatch,
    EventKind,
    Sample,
    SampleBatch,
    SampleReject,
    SignalPlan,
)

__all__ = [
    "AgentConfig", "ConfigAck", "ConnectionState", "DecodeReason", "DeviceHealth", "DeviceState", "DtcType",
    "Event", "EventBatch", "EventKind", "Sample", "SampleBatch", "SampleReject", "SignalPlan",
    "WireDecodeError", "WireEncodeError", "codec", "signals", "topics", "validation",
]
