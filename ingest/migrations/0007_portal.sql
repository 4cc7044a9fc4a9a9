-- Portal: organisations, people, consents, audit, leads, webhooks, erasure, and the partner feed's
-- ordering guarantee. Plain tables on both backends (small next to samples).

CREATE TABLE organisations (
    org_id      bigserial PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('dealer', 'insurer')),
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- People who log in. Organisation staff have org_id and a role of their organisation's kind; a
-- driver (the mobile app's account) has owner_id and role 'driver'. Never both.
CREATE TABLE portal_users (
    user_id        bigserial PRIMARY KEY,
    email          text NOT NULL UNIQUE,
    password_hash  text NOT NULL,                     -- argon2id
    org_id         bigint REFERENCES organisations (org_id) ON DELETE CASCADE,
    owner_id       bigint REFERENCES owners (owner_id) ON DELETE CASCADE,
    role           text NOT NULL CHECK (role IN ('admin', 'analyst', 'service_advisor', 'sales',
                                                  'underwriter', 'driver')),
    display_name   text NOT NULL DEFAULT '',
    active         boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((role = 'driver') = (owner_id IS NOT NULL) AND (owner_id IS NULL OR org_id IS NULL)
           AND (role = 'driver' OR org_id IS NOT NULL))
);

-- Server-to-server clients (a CRM, an insurer's policy system): the key is shown once; only its
-- SHA-256 is stored (a random 256-bit secret needs no slow KDF).
CREATE TABLE api_keys (
    key_id      bigserial PRIMARY KEY,
    org_id      bigint NOT NULL REFERENCES organisations (org_id) ON DELETE CASCADE,
    name        text NOT NULL,
    prefix      text NOT NULL UNIQUE,                 -- the public part, to find the row
    key_hash    bytea NOT NULL,
    role        text NOT NULL CHECK (role IN ('admin', 'analyst', 'service_advisor', 'sales', 'underwriter')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- An owner's permission for one organisation to read some scopes of their vehicles' data for a
-- stated purpose, between starts_at and expires_at, until revoked. Effective at once both ways.
CREATE TABLE consents (
    consent_id  bigserial PRIMARY KEY,
    owner_id    bigint NOT NULL REFERENCES owners (owner_id) ON DELETE CASCADE,
    org_id      bigint NOT NULL REFERENCES organisations (org_id) ON DELETE CASCADE,
    scopes      text[] NOT NULL CHECK (scopes <@ ARRAY['vehicle_health', 'service_contact', 'driving_score',
                                                       'mileage', 'trip_summary', 'location_history']::text[]
                                       AND cardinality(scopes) > 0),
    purpose     text NOT NULL CHECK (length(purpose) BETWEEN 3 AND 500),
    starts_at   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (expires_at IS NULL OR expires_at > starts_at)
);
CREATE INDEX consents_org_idx ON consents (org_id, owner_id);
CREATE INDEX consents_owner_idx ON consents (owner_id);

-- Every read of personal data: who, whose, which scope, for what purpose, when.
CREATE TABLE audit_log (
    audit_id     bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    actor_kind   text NOT NULL CHECK (actor_kind IN ('user', 'api_key')),
    actor_id     bigint NOT NULL,
    actor_label  text NOT NULL,               -- user e-mail or key name, as it was then
    org_id       bigint,
    owner_id     bigint,
    vehicle_id   bigint,
    scope        text NOT NULL,
    purpose      text NOT NULL,
    action       text NOT NULL,               -- the endpoint's operation id
    records      integer NOT NULL DEFAULT 0   -- rows of personal data returned
);
CREATE INDEX audit_log_owner_idx ON audit_log (owner_id, at);
CREATE INDEX audit_log_org_idx ON audit_log (org_id, at);

-- Erasures (right to be forgotten): the record that one happened, and how many rows went, without
-- anything that identifies the person.
CREATE TABLE erasures (
    erasure_id   bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    requested_by text NOT NULL CHECK (requested_by IN ('owner', 'operator')),
    rows_deleted jsonb NOT NULL
);

-- Services a dealer recorded (the service-due clock restarts from the latest).
CREATE TABLE service_records (
    service_id    bigserial PRIMARY KEY,
    vehicle_id    bigint NOT NULL REFERENCES vehicles (vehicle_id) ON DELETE CASCADE,
    org_id        bigint REFERENCES organisations (org_id) ON DELETE SET NULL,
    serviced_at   timestamptz NOT NULL,
    odometer_km   double precision,
    note          text NOT NULL DEFAULT ''
);
CREATE INDEX service_records_vehicle_idx ON service_records (vehicle_id, serviced_at);

-- Dealer leads, one open lead per (dealer, vehicle, kind, key); the pipeline moves it along.
CREATE TABLE leads (
    lead_id        bigserial PRIMARY KEY,
    org_id         bigint NOT NULL REFERENCES organisations (org_id) ON DELETE CASCADE,
    vehicle_id     bigint NOT NULL REFERENCES vehicles (vehicle_id) ON DELETE CASCADE,
    kind           text NOT NULL CHECK (kind IN ('new_dtc', 'overheating', 'weak_battery', 'warmup_failure',
                                                 'service_due', 'trade_in')),
    dedupe_key     text NOT NULL,              -- e.g. the trouble code; one open lead per key
    priority       smallint NOT NULL CHECK (priority BETWEEN 1 AND 3),
    reason         text NOT NULL,
    detail         jsonb NOT NULL DEFAULT '{}',
    state          text NOT NULL DEFAULT 'new' CHECK (state IN ('new', 'contacted', 'appointment', 'visited', 'lost')),
    lost_reason    text,
    assigned_to    bigint REFERENCES portal_users (user_id) ON DELETE SET NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    closed_at      timestamptz,
    change_version bigint NOT NULL DEFAULT 0,
    CHECK ((state = 'lost') = (lost_reason IS NOT NULL))
);
CREATE UNIQUE INDEX leads_open_key ON leads (org_id, vehicle_id, kind, dedupe_key) WHERE state NOT IN ('visited', 'lost');
CREATE INDEX leads_org_idx ON leads (org_id, created_at);

CREATE TABLE lead_events (
    lead_event_id bigserial PRIMARY KEY,
    lead_id       bigint NOT NULL REFERENCES leads (lead_id) ON DELETE CASCADE,
    at            timestamptz NOT NULL DEFAULT now(),
    from_state    text,
    to_state      text NOT NULL,
    actor         text NOT NULL,
    note          text NOT NULL DEFAULT ''
);
CREATE INDEX lead_events_lead_idx ON lead_events (lead_id, at);

-- CRM webhooks: an outbox row per delivery, retried with backoff, each attempt logged.
CREATE TABLE webhooks (
    webhook_id  bigserial PRIMARY KEY,
    org_id      bigint NOT NULL REFERENCES organisations (org_id) ON DELETE CASCADE,
    url         text NOT NULL CHECK (url ~ '^https?://'),
    secret      text NOT NULL,               -- the HMAC-SHA256 key the receiver verifies with
    events      text[] NOT NULL DEFAULT ARRAY['lead.created', 'lead.updated'],
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    delivery_id     bigserial PRIMARY KEY,
    webhook_id      bigint NOT NULL REFERENCES webhooks (webhook_id) ON DELETE CASCADE,
    event           text NOT NULL,
    payload         jsonb NOT NULL,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_hook_idx ON webhook_deliveries (webhook_id, created_at);

-- Partner feed: versions in commit order. A transaction that writes a feed row first takes one
-- transaction-scoped advisory lock and only then draws its versions, so a transaction drawing a
-- higher version starts only after every lower one committed (or rolled back). A reader that sees
-- version v therefore sees every committed version below v: paging by version never skips a row
-- that commits late. Deleted rows leave a tombstone with a version of their own.
CREATE TABLE feed_tombstones (
    kind           text NOT NULL,
    id             bigint NOT NULL,
    device_key     integer,
    org_id         bigint,                   -- leads: the dealer
    recipients     bigint[],                 -- erasure: organisations that had consent, to be told
    deleted_at     timestamptz NOT NULL DEFAULT now(),
    change_version bigint NOT NULL
);
CREATE INDEX feed_tombstones_version_idx ON feed_tombstones (change_version);

CREATE FUNCTION vinsight_feed_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7340033);
    NEW.change_version := nextval('change_version_seq');
    RETURN NEW;
END $$;

CREATE FUNCTION vinsight_feed_tombstone() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_row jsonb := to_jsonb(OLD);   -- TG_ARGV[1] names the id column
BEGIN
    PERFORM pg_advisory_xact_lock(7340033);
    INSERT INTO feed_tombstones (kind, id, device_key, org_id, change_version)
    VALUES (TG_ARGV[0], (old_row ->> TG_ARGV[1])::bigint, (old_row ->> 'device_key')::integer,
            (old_row ->> 'org_id')::bigint, nextval('change_version_seq'));
    RETURN OLD;
END $$;

CREATE TRIGGER trips_feed_stamp BEFORE INSERT OR UPDATE ON trips
    FOR EACH ROW EXECUTE FUNCTION vinsight_feed_stamp();
CREATE TRIGGER driving_events_feed_stamp BEFORE INSERT OR UPDATE ON driving_events
    FOR EACH ROW EXECUTE FUNCTION vinsight_feed_stamp();
CREATE TRIGGER leads_feed_stamp BEFORE INSERT OR UPDATE ON leads
    FOR EACH ROW EXECUTE FUNCTION vinsight_feed_stamp();
CREATE TRIGGER trips_feed_tombstone AFTER DELETE ON trips
    FOR EACH ROW EXECUTE FUNCTION vinsight_feed_tombstone('trip', 'trip_id');
CREATE TRIGGER driving_events_feed_tombstone AFTER DELETE ON driving_events
    FOR EACH ROW EXECUTE FUNCTION vinsight_feed_tombstone('event', 'event_id');
CREATE TRIGGER leads_feed_tombstone AFTER DELETE ON leads
    FOR EACH ROW EXECUTE FUNCTION vinsight_feed_tombstone('lead', 'lead_id');

CREATE INDEX trips_version_idx ON trips (change_version);
CREATE INDEX driving_events_version_idx ON driving_events (change_version);
CREATE INDEX leads_version_idx ON leads (change_version);
CREATE INDEX trips_start_idx ON trips (start_ts);
CREATE INDEX scores_device_period_idx ON scores (device_key, scope, period_start);
