"""The agent's settings: one object, read from ``VINSIGHT_AGENT_*`` environment variables.

Every field has a default that works on a Raspberry Pi with a USB ELM327 and gpsd. Remote
configuration (see :class:`vinsight.contract.AgentConfig`) may later override the batching,
heartbeat, cut-off and signal plan at run time; this object is the boot-time baseline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VINSIGHT_AGENT_", env_file=None, extra="ignore")

    device_id: str = Field("dev-0001", description="Device identity; also the MQTT username")
    state_dir: Path = Field(Path("/var/lib/vinsight-agent"), description="Outbox, PID cache, boot counter")

    # --- OBD-II adapter ---------------------------------------------------------------------------
    obd_enabled: bool = Field(True, description="Read the car through an ELM327 (off for GPS-only units)")
    obd_port: str | None = Field(
        None,
        description="Serial device (/dev/ttyUSB0, /dev/rfcomm0) or socket://host:port; None scans serial ports",
    )
    obd_baudrate: int | None = Field(None, description="None lets python-obd probe; use 38400 over TCP")
    obd_protocol: str | None = Field(None, description="ELM327 protocol id (e.g. '6'); None = auto")
    obd_timeout_s: float = Field(1.0, description="Per-request timeout; slow clones need more")
    obd_read_timeout_s: float = Field(
        1.0, description="Read timeout once connected (python-obd: 10 s, retried ~10x per silent request)")
    obd_fast: bool = Field(False, description="python-obd fast mode (response-count hint, repeat CR)")
    reconnect_min_s: float = Field(1.0, description="First reconnect delay; doubles up to the max")
    reconnect_max_s: float = Field(60.0)

    # --- GPS ------------------------------------------------------------------------------------------
    gps_mode: Literal["gpsd", "nmea", "none"] = Field("gpsd", description="gpsd, raw NMEA serial, or no GPS")
    gpsd_host: str = Field("127.0.0.1", description="gpsd address (JSON protocol)")
    gpsd_port: int = Field(2947, description="gpsd port")
    nmea_port: str = Field("/dev/ttyACM0", description="Serial NMEA receiver when gpsd is not used")
    nmea_baudrate: int = Field(9600, description="NMEA receiver serial speed")
    set_system_clock: bool = Field(
        False, description="Set the system clock from GPS time (needs CAP_SYS_TIME); else only offset timestamps"
    )
    clock_max_drift_s: float = Field(2.0, description="Correct the clock when GPS and system differ by more")

    # --- sampling and batching -----------------------------------------------------------------------
    sample_interval_s: float = Field(1.0, description="One sample is assembled per interval")
    batch_max_samples: int = Field(60, description="Publish a batch at this many samples ...")
    batch_max_age_s: float = Field(30.0, description="... or when its oldest sample is this old")
    outbox_max_bytes: int = Field(256 * 1024 * 1024, description="Disk budget; the oldest samples go first")
    health_interval_s: float = Field(30.0, description="How often health/achieved rates are published")

    # --- power --------------------------------------------------------------------------------------------
    heartbeat_interval_s: float = Field(300.0, description="Status heartbeat while parked")
    low_voltage_cutoff_v: float = Field(11.8, description="Below this (engine off) the agent stops all OBD traffic")
    engine_off_after_s: float = Field(10.0, description="RPM 0 or no ECU answer for this long = engine off")
    wake_voltage_v: float = Field(13.2, description="Alternator charging voltage: engine likely running")
    wake_voltage_jump_v: float = Field(0.2, description="A rise this large between heartbeats probes the ECU")

    # --- MQTT -----------------------------------------------------------------------------------------------
    mqtt_host: str = Field("127.0.0.1", description="MQTT broker host")
    mqtt_port: int = Field(1883, description="MQTT broker port (8883 for TLS)")
    mqtt_username: str | None = Field(None, description="Defaults to the device id when a password is set")
    mqtt_password: str | None = Field(None, description="Per-device password from `vinsight device add`")
    mqtt_tls: bool = Field(False, description="Connect with TLS")
    mqtt_ca_file: Path | None = Field(None, description="CA certificate that signed the broker's")
    mqtt_cert_file: Path | None = Field(None, description="Client certificate for mutual TLS")
    mqtt_key_file: Path | None = Field(None, description="Private key of the client certificate")
    mqtt_keepalive_s: int = Field(30, description="MQTT keep-alive; the broker publishes the will after 1.5x")
    mqtt_json: bool = Field(False, description="Send the JSON form of batches (debugging)")

    # --- replay (instead of a car) -------------------------------------------------------------------------
    replay_file: Path | None = Field(None, description="A POLIDriving *_col.csv(.gz) to play instead of a car")
    replay_speed: float = Field(1.0, description="Playback speed factor; 0 = as fast as possible")
