-- Discrete events from devices (trouble codes, MIL, engine on/off, ...) and the trouble-code
-- episodes derived from them. Low volume, so plain tables on every backend.

CREATE TABLE device_events (
    device_key   integer NOT NULL REFERENCES devices (device_key) ON DELETE CASCADE,
    boot_id      uuid NOT NULL,
    seq          bigint NOT NULL,
    ts           timestamptz NOT NULL,
    kind         text NOT NULL,
    data         jsonb NOT NULL DEFAULT '{}',
    ingested_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_key, boot_id, seq)      -- redelivery of an event is a no-op
);
CREATE INDEX device_events_ts_idx ON device_events (device_key, ts);
CREATE INDEX device_events_kind_idx ON device_events (kind, ts);

-- One row per stretch of time a code was present: opened by dtc_new, closed by dtc_cleared.
-- A code reported again while open only moves last_seen.
CREATE TABLE dtc_episodes (
    episode_id   bigserial PRIMARY KEY,
    device_key   integer NOT NULL REFERENCES devices (device_key) ON DELETE CASCADE,
    code         text NOT NULL CHECK (code ~ '^[PCBU][0-9A-F]{4}$'),
    dtc_type     text NOT NULL CHECK (dtc_type IN ('stored', 'pending', 'permanent')),
    description  text NOT NULL DEFAULT '',
    first_seen   timestamptz NOT NULL,
    last_seen    timestamptz NOT NULL,
    cleared_at   timestamptz,
    mil_on       boolean NOT NULL DEFAULT false     -- MIL state reported while the episode was open
);
CREATE UNIQUE INDEX dtc_episodes_open_key ON dtc_episodes (device_key, code, dtc_type) WHERE cleared_at IS NULL;
CREATE INDEX dtc_episodes_device_idx ON dtc_episodes (device_key, first_seen);
