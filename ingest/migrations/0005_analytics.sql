-- Derived tables written by analytics (`vinsight analytics run`), read by the portal. Plain tables on
-- both backends: they are small next to samples (a trip per drive, events per trip). Geometry is
-- GeoJSON in jsonb so the portal can return it as is; no PostGIS dependency.

-- One counter for every change the partner feed serves (trips, events; leads later): a row written
-- or rewritten takes the next value, so a client resumes from the last version it saw.
CREATE SEQUENCE change_version_seq;

-- What analytics has processed: per vehicle and hour, the sample count it saw. Comparing it with
-- samples_hourly finds late data, so a run re-opens only the hours (and the trips around them)
-- that changed.
CREATE TABLE analytics_marks (
    device_key  integer NOT NULL REFERENCES devices (device_key) ON DELETE CASCADE,
    bucket      timestamptz NOT NULL,
    samples     bigint NOT NULL,
    PRIMARY KEY (device_key, bucket)
);

CREATE TABLE trips (
    trip_id          bigserial PRIMARY KEY,
    device_key       integer NOT NULL REFERENCES devices (device_key) ON DELETE CASCADE,
    kind             text NOT NULL DEFAULT 'movement' CHECK (kind IN ('movement', 'engine')),
    start_ts         timestamptz NOT NULL,
    end_ts           timestamptz NOT NULL,
    is_open          boolean NOT NULL DEFAULT false,   -- still going at the end of the data
    start_lat        double precision,
    start_lon        double precision,
    end_lat          double precision,
    end_lon          double precision,
    start_place_id   bigint,
    end_place_id     bigint,
    distance_m       double precision NOT NULL DEFAULT 0,
    distance_source  text NOT NULL DEFAULT 'gps',      -- gps / odometer / speed
    duration_s       double precision NOT NULL DEFAULT 0,
    driving_s        double precision NOT NULL DEFAULT 0,
    idle_s           double precision NOT NULL DEFAULT 0,
    max_speed_kmh    double precision,
    avg_speed_kmh    double precision,
    fuel_l           double precision,
    night_share      double precision,
    urban_share      double precision,
    rural_share      double precision,
    motorway_share   double precision,
    track            jsonb,                            -- simplified GeoJSON LineString
    computed_at      timestamptz NOT NULL DEFAULT now(),
    change_version   bigint NOT NULL DEFAULT nextval('change_version_seq')  -- partner feed cursor
);
CREATE INDEX trips_device_time_idx ON trips (device_key, start_ts);

CREATE TABLE driving_events (
    event_id     bigserial PRIMARY KEY,
    device_key   integer NOT NULL REFERENCES devices (device_key) ON DELETE CASCADE,
    trip_id      bigint REFERENCES trips (trip_id) ON DELETE CASCADE,
    kind         text NOT NULL,   -- harsh_acceleration, harsh_braking, harsh_cornering, speeding, over_revving, long_idling
    ts           timestamptz NOT NULL,
    end_ts       timestamptz NOT NULL,
    lat          double precision,
    lon          double precision,
    severity     smallint NOT NULL,
    peak         double precision,
    peak_unit    text,
    duration_s   double precision,
    change_version bigint NOT NULL DEFAULT nextval('change_version_seq')
);
CREATE INDEX driving_events_device_time_idx ON driving_events (device_key, ts);
CREATE INDEX driving_events_trip_idx ON driving_events (trip_id);

CREATE TABLE scores (
    score_id      bigserial PRIMARY KEY,
    device_key    integer NOT NULL REFERENCES devices (device_key) ON DELETE CASCADE,
    scope         text NOT NULL CHECK (scope IN ('trip', 'day', 'week', 'month')),
    trip_id       bigint REFERENCES trips (trip_id) ON DELETE CASCADE,
    period_start  timestamptz NOT NULL,
    period_end    timestamptz NOT NULL,
    score         double precision,          -- NULL below the minimum exposure
    eco_score     double precision,
    distance_m    double precision NOT NULL DEFAULT 0,
    explanation   jsonb NOT NULL DEFAULT '{}',
    computed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX scores_trip_key ON scores (trip_id) WHERE scope = 'trip';
CREATE UNIQUE INDEX scores_period_key ON scores (device_key, scope, period_start) WHERE scope <> 'trip';

CREATE TABLE places (
    place_id     bigserial PRIMARY KEY,
    device_key   integer NOT NULL REFERENCES devices (device_key) ON DELETE CASCADE,
    lat          double precision NOT NULL,
    lon          double precision NOT NULL,
    label        text CHECK (label IN ('home', 'work')),
    visits       integer NOT NULL DEFAULT 0,
    dwell_s      double precision NOT NULL DEFAULT 0,
    computed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX places_device_idx ON places (device_key);

CREATE TABLE staypoints (
    staypoint_id bigserial PRIMARY KEY,
    device_key   integer NOT NULL REFERENCES devices (device_key) ON DELETE CASCADE,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    lat          double precision NOT NULL,
    lon          double precision NOT NULL,
    place_id     bigint REFERENCES places (place_id) ON DELETE SET NULL
);
CREATE INDEX staypoints_device_time_idx ON staypoints (device_key, started_at);

CREATE TABLE routes (
    route_id        bigserial PRIMARY KEY,
    device_key      integer NOT NULL REFERENCES devices (device_key) ON DELETE CASCADE,
    origin_place_id bigint REFERENCES places (place_id) ON DELETE SET NULL,
    dest_place_id   bigint REFERENCES places (place_id) ON DELETE SET NULL,
    trips           integer NOT NULL,
    trip_ids        bigint[] NOT NULL DEFAULT '{}',
    geometry        jsonb,                   -- representative GeoJSON LineString
    computed_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE geofences (
    geofence_id  bigserial PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('dealer', 'home', 'custom')),
    name         text NOT NULL,
    owner_org    text,                        -- the organisation that defined it (portal)
    geometry     jsonb NOT NULL,              -- GeoJSON Polygon / MultiPolygon
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE geofence_visits (
    visit_id     bigserial PRIMARY KEY,
    device_key   integer NOT NULL REFERENCES devices (device_key) ON DELETE CASCADE,
    geofence_id  bigint NOT NULL REFERENCES geofences (geofence_id) ON DELETE CASCADE,
    entered_at   timestamptz NOT NULL,
    exited_at    timestamptz,
    dwell_s      double precision
);
CREATE INDEX geofence_visits_device_idx ON geofence_visits (device_key, entered_at);

-- Trouble-code episodes with what a dealer reads: open or not, how long, which vehicle.
CREATE VIEW dtc_episodes_view AS
SELECT e.*, d.device_id, d.vehicle_id, v.vin,
       e.cleared_at IS NULL AS is_open,
       extract(epoch FROM coalesce(e.cleared_at, now()) - e.first_seen) / 86400.0 AS days_open
FROM dtc_episodes e
JOIN devices d USING (device_key)
LEFT JOIN vehicles v ON v.vehicle_id = d.vehicle_id;

-- The latest health assessment per vehicle (battery, coolant, leads), for the dealer overview.
CREATE TABLE vehicle_health (
    device_key   integer PRIMARY KEY REFERENCES devices (device_key) ON DELETE CASCADE,
    computed_at  timestamptz NOT NULL DEFAULT now(),
    battery      jsonb,
    coolant      jsonb,
    leads        jsonb NOT NULL DEFAULT '[]'
);
