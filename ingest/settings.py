"""Ingest settings: one object, from ``VINSIGHT_INGEST_*`` environment variables.

The database URL and broker address are shared by every server component, so they are read from
``VINSIGHT_DB_URL`` and ``VINSIGHT_MQTT_*`` as well (the ingest-specific names win when both are set).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DB_URL = "postgresql://postgres@127.0.0.1:5432/vinsight"


def _env(name: str) -> AliasChoices:
    return AliasChoices(f"VINSIGHT_INGEST_{name.upper()}", f"VINSIGHT_{name.upper()}")


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VINSIGHT_INGEST_", env_file=None, extra="ignore",
                                      populate_by_name=True)

    # --- where -------------------------------------------------------------------------------------
    db_url: str = Field(DEFAULT_DB_URL, validation_alias=_env("db_url"), description="PostgreSQL connection URL")
    mqtt_host: str = Field("127.0.0.1", validation_alias=_env("mqtt_host"), description="MQTT broker host")
    mqtt_port: int = Field(1883, validation_alias=_env("mqtt_port"), description="MQTT broker port")
    mqtt_username: str | None = Field(None, validation_alias=_env("mqtt_username"),
                                      description="Broker username of the ingest service (not a device)")
    mqtt_password: str | None = Field(None, validation_alias=_env("mqtt_password"), description="Its password")
    mqtt_tls_ca: Path | None = Field(None, validation_alias=_env("mqtt_tls_ca"),
                                     description="CA bundle: when set, connect with TLS")
    share_group: str = Field("ingest", description="MQTT v5 shared-subscription group; workers in it split the load")
    client_id_prefix: str = Field("vinsight-ingest", description="Worker i connects as <prefix>-<i>")
    session_expiry_s: int = Field(
        86_400, description="The broker keeps a worker's unacknowledged messages this long after it disappears")
    keepalive_s: int = Field(30, description="MQTT keep-alive")

    # --- batching and flow control -------------------------------------------------------------------
    flush_rows: int = Field(20_000, ge=1, description="Write to the database at this many buffered samples ...")
    flush_age_s: float = Field(0.25, gt=0, description="... or when the oldest buffered message is this old")
    receive_maximum: int = Field(
        2_000, ge=10, le=65_535,
        description="Unacknowledged messages the broker may send this worker (MQTT v5 flow control). "
                    "Messages are acknowledged only after their rows commit, so this bounds memory and is "
                    "the backpressure when the database is slow")
    max_interval_ms: int = Field(
        5_000, description="Longest gap a sample may stand for in rollups; longer gaps are not integrated")
    require_provisioned: bool = Field(
        False, description="Refuse data from devices not added with `vinsight device add` (dead letter "
                           "'unknown_device'); off lets a fresh install or the simulator register them as 'auto'")
    dead_letter_payload_max: int = Field(1 << 20, description="Largest payload kept whole in dead letters")

    # --- storage policy ------------------------------------------------------------------------------
    backend: Literal["auto", "timescaledb", "native"] = Field(
        "auto", description="Storage backend at the first migrate: auto picks TimescaleDB when available")
    chunk_days: int = Field(1, ge=1, le=31, description="Hypertable chunk / native partition width in days")
    retention_days: int = Field(
        730, description="Raw samples older than this are dropped (rollups are kept). At least 92: ingest "
                         "accepts samples up to 90 days old and must never recreate a dropped partition")
    columnstore_after_days: int = Field(7, ge=1, description="TimescaleDB: convert chunks older than this")
    partitions_ahead_days: int = Field(3, ge=1, description="Native: partitions created this many days ahead")
    maintenance_interval_s: float = Field(60.0, description="Native: rollup refresh / partition upkeep period")

    # --- observability -------------------------------------------------------------------------------
    metrics_port: int = Field(9108, description="Worker i serves /metrics and /healthz on this port + i; 0 = off")
    metrics_host: str = Field("127.0.0.1", description="Address the metrics endpoint listens on")

    @field_validator("retention_days")
    @classmethod
    def _retention_covers_window(cls, value: int) -> int:
        if value < 92:
            raise ValueError("retention_days must be at least 92 (ingest accepts samples up to 90 days old)")
        return value
