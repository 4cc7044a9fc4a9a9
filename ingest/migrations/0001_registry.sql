-- Registry: who owns which vehicle, which device sits in which vehicle, and how each device is doing.
-- The portal (organisations, consents) adds its own tables in later migrations; these are the ones
-- ingest needs to accept data.

CREATE TABLE owners (
    owner_id      bigserial PRIMARY KEY,
    external_ref  text UNIQUE,                 -- the mobile app's account id, when linked
    display_name  text NOT NULL DEFAULT '',
    email         text,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE vehicles (
    vehicle_id    bigserial PRIMARY KEY,
    vin           text UNIQUE CHECK (vin IS NULL OR vin ~ '^[A-HJ-NPR-Z0-9]{17}$'),
    owner_id      bigint REFERENCES owners (owner_id) ON DELETE SET NULL,
    make          text,
    model         text,
    model_year    smallint,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX vehicles_owner_idx ON vehicles (owner_id);

-- device_key is the small integer every sample row carries (4 bytes instead of the text id in
-- each of billions of rows, and a cheaper index); device_id is the identity on the wire and the
-- broker username.
CREATE TABLE devices (
    device_key     serial PRIMARY KEY,
    device_id      text NOT NULL UNIQUE CHECK (device_id ~ '^[a-z0-9][a-z0-9_-]{1,63}$'),
    vehicle_id     bigint REFERENCES vehicles (vehicle_id) ON DELETE SET NULL,
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked', 'auto')),
    password_hash  text,                        -- Mosquitto PBKDF2-SHA512 ($7$) hash; never the password
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    note           text NOT NULL DEFAULT ''
);
CREATE INDEX devices_vehicle_idx ON devices (vehicle_id);

CREATE TABLE device_status (
    device_key      integer PRIMARY KEY REFERENCES devices (device_key) ON DELETE CASCADE,
    state           text NOT NULL DEFAULT 'unknown',  -- online / offline (the agent's retained state)
    state_since     timestamptz,
    last_seen       timestamptz,                      -- newest message of any kind from the device
    last_sample_ts  timestamptz,                      -- newest sample timestamp stored
    boot_id         uuid,
    agent_version   text,
    config_version  integer,
    health          jsonb,                            -- the latest health message as sent
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Everything ingest refused, whole, with the reason: nothing a device sends is silently lost.
CREATE TABLE dead_letters (
    dead_letter_id  bigserial PRIMARY KEY,
    received_at     timestamptz NOT NULL DEFAULT now(),
    topic           text NOT NULL,
    device_id       text,                 -- from the topic, when the topic parses
    content_type    text,
    reason          text NOT NULL,        -- stable code (DecodeReason, or an ingest reason)
    detail          text NOT NULL DEFAULT '',
    sample_index    integer,              -- set when one sample of a batch was refused
    sample          jsonb,                -- that sample, as decoded
    payload         bytea                 -- the message as received (whole-message rejects)
);
CREATE INDEX dead_letters_received_idx ON dead_letters (received_at);
CREATE INDEX dead_letters_reason_idx ON dead_letters (reason, received_at);
