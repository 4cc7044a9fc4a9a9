-- Portal read paths (bench/api_latency.py): covering indexes, so the per-vehicle aggregates of the
-- dealer overview and the insurer's policyholder list read index pages only (index-only scans)
-- instead of one heap page per row, and a partial index for the open trouble codes.

-- Insurer policyholders: events of the last 30 days counted by kind, per device.
DROP INDEX driving_events_device_time_idx;
CREATE INDEX driving_events_device_time_idx ON driving_events (device_key, ts) INCLUDE (kind);

-- Insurer policyholders and score distribution: distance-weighted day scores of the last 30 days.
DROP INDEX scores_device_period_idx;
CREATE INDEX scores_device_period_idx ON scores (device_key, scope, period_start) INCLUDE (score, distance_m);

-- Dealer overview: open trouble codes of a page of vehicles.
CREATE INDEX dtc_episodes_open_idx ON dtc_episodes (device_key) WHERE cleared_at IS NULL;

-- Dealer overview: distance recorded (and since the last service) from the daily rollups. On
-- TimescaleDB samples_daily is a continuous aggregate; its materialisation is indexed by the extension.
--@native CREATE INDEX samples_daily_distance_idx ON samples_daily (device_key, bucket) INCLUDE (distance_km);
