"""Analytics settings: one object, from ``VINSIGHT_ANALYTICS_*`` (the database URL is the shared
``VINSIGHT_DB_URL``). Thresholds of each stage live in that stage's ``*Params`` dataclass, with
documented SI defaults; a deployment overrides them with a JSON file (``params_file``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ingest.settings import DEFAULT_DB_URL


class AnalyticsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VINSIGHT_ANALYTICS_", env_file=None, extra="ignore",
                                      populate_by_name=True)

    db_url: str = Field(DEFAULT_DB_URL, validation_alias=AliasChoices("VINSIGHT_ANALYTICS_DB_URL", "VINSIGHT_DB_URL"),
                        description="PostgreSQL connection URL")
    interval_s: float = Field(60.0, description="Continuous mode: seconds between runs")
    vehicles_per_batch: int = Field(200, ge=1, description="Vehicles read and analysed together (one COPY)")
    max_window_days: int = Field(
        95, description="Longest stretch re-analysed per vehicle in one run (ingest accepts data 90 days late)")
    place_horizon_days: int = Field(
        28, description="Stay points, places (home / work) and routes look back this far; 0 = skip them")
    timezone: str = Field("UTC", description="IANA time zone of the fleet, for home / work and commute hours")
    params_file: Path | None = Field(
        None, description="JSON overriding stage parameters, e.g. {\"trips\": {\"stop_duration_s\": 240}}")
