"""Portal settings: one object, from ``VINSIGHT_PORTAL_*`` environment variables.

The database URL is shared by every server component (``VINSIGHT_DB_URL``); the portal-specific
name wins when both are set.
"""

from __future__ import annotations

import secrets

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DB_URL = "postgresql://postgres@127.0.0.1:5432/vinsight"


class PortalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VINSIGHT_PORTAL_", env_file=None, extra="ignore",
                                      populate_by_name=True)

    db_url: str = Field(DEFAULT_DB_URL, validation_alias=AliasChoices("VINSIGHT_PORTAL_DB_URL", "VINSIGHT_DB_URL"),
                        description="PostgreSQL connection URL")
    host: str = Field("127.0.0.1", description="Address the portal listens on")
    port: int = Field(8000, description="Port the portal listens on")
    jwt_secret: str = Field(
        default_factory=lambda: secrets.token_urlsafe(32),
        description="HMAC key for access tokens (HS256). Set it in production: the default is random per "
                    "process, so tokens die with a restart and workers would not accept each other's")
    token_ttl_s: int = Field(3600, ge=60, le=86_400, description="Lifetime of an access token")
    pool_min: int = Field(2, ge=1, description="Database connections kept open")
    pool_max: int = Field(20, ge=1, description="Most database connections the portal opens")
    rate_limit_per_min: int = Field(
        1200, ge=1, description="Requests per minute per client (token bucket; a burst of the same size)")
    login_rate_limit_per_min: int = Field(
        20, ge=1, description="Login attempts per minute per e-mail address and per client address")
    page_size_default: int = Field(50, ge=1, le=1000, description="Items per page when the client does not ask")
    page_size_max: int = Field(500, ge=1, le=10_000, description="Most items per page a client may ask for")
    feed_page_max: int = Field(1000, ge=1, le=10_000, description="Most changes per partner-feed page")
    map_tiles_url: str = Field(
        "", description="Tile URL template for the web portals' maps (e.g. https://tile.example/{z}/{x}/{y}.png); "
                        "empty draws tracks on a plain background")
    trade_in_km: float = Field(150_000.0, description="Odometer above which a vehicle becomes a trade-in lead")
    trade_in_age_years: float = Field(8.0, description="Vehicle age above which it becomes a trade-in lead")
    webhook_timeout_s: float = Field(5.0, gt=0, description="Timeout of one webhook delivery attempt")
    webhook_max_attempts: int = Field(8, ge=1, description="Attempts before a delivery is marked failed")
    webhook_backoff_s: float = Field(
        2.0, gt=0, description="First retry delay; doubles per attempt (2, 4, 8 ... s, capped at one hour)")
    background_jobs: bool = Field(
        True, description="Run lead generation and webhook delivery in the portal process (one portal "
                          "instance should; set false on the others or run `vinsight portal jobs`)")
    jobs_interval_s: float = Field(30.0, gt=0, description="How often background jobs run")
