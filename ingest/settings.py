"""Ingest settings: one object, read from ``VINSIGHT_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VINSIGHT_", env_file=None, extra="ignore")

    db_url: str = Field("postgresql://postgres@127.0.0.1:5432/vinsight", description="PostgreSQL/TimescaleDB")

    # --- storage policy -------------------------------------------------------------------------------
    chunk_interval: str = Field("1 day", description="Hypertable chunk / native partition width")
    partitions_ahead: int = Field(7, description="Native partitions created ahead of time")
    retention_days: int | None = Field(None, description="Raw samples older than this are dropped; None keeps all")
    compress_after: str = Field("7 days", description="TimescaleDB: compress chunks older than this")
    use_timescaledb: bool | None = Field(
        None, description="None: use TimescaleDB when the extension is available; False forces native"
    )

    # --- MQTT -------------------------------------------------------------------------------------------
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    mqtt_tls: bool = False
    mqtt_ca_file: Path | None = None
    share_group: str = Field("ingest", description="MQTT v5 shared-subscription group of the workers")
    receive_maximum: int = Field(2000, description="Unacked messages the broker may send each worker")

    # --- batching and validation --------------------------------------------------------------------
    batch_max_rows: int = Field(20_000, description="Flush a COPY batch at this many samples ...")
    batch_max_age_s: float = Field(0.5, description="... or when its oldest message waited this long")
    max_past_days: int = Field(90, description="Samples older than this are rejected to dead letters")
    max_future_s: int = Field(300, description="Samples this far ahead of the server clock are rejected")
    auto_register_devices: bool = Field(
        False, description="Store data from unknown device ids (demo/test); production provisions first"
    )

    # --- observability -----------------------------------------------------------------------------------
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9108, description="Prometheus /metrics and /healthz; 0 disables")

    # --- provisioning ------------------------------------------------------------------------------------
    broker_dir: Path = Field(Path("deploy/mosquitto"), description="Where passwd and acl files are written")
