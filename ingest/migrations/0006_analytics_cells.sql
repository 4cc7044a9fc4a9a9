-- Fleet movement maps and dealer service visits, written by analytics (`vinsight analytics run`).

-- k-anonymous heatmap cells (analytics/heatmaps.py): per segment ('' = the whole fleet) and UTC day,
-- only cells with at least k distinct vehicles are stored; counts below k inside a released cell are
-- NULL (fixes / stops published only when k vehicles contributed to *them*). The grid is fixed per
-- deployment (cell_size_m, reference latitude), so days can be compared and summed per cell.
CREATE TABLE heatmap_cells (
    segment        text NOT NULL DEFAULT '',
    day            date NOT NULL,
    cell           bigint NOT NULL,          -- grid key: row * ncols + column from (-90°, -180°)
    cell_size_m    double precision NOT NULL,
    k_min_vehicles integer NOT NULL,
    vehicles       integer NOT NULL,         -- distinct vehicles with a fix or a stop in the cell (>= k)
    fixes          bigint,                   -- GPS fixes (1 Hz: vehicle-seconds); NULL below k
    fix_vehicles   integer,
    stops          integer,                  -- trip ends (where vehicles park); NULL below k
    stop_vehicles  integer,
    geometry       jsonb NOT NULL,           -- GeoJSON Polygon of the cell
    computed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (segment, day, cell)
);

-- How many cells of a day were suppressed (below k): the count only, never their positions.
CREATE TABLE heatmap_days (
    segment           text NOT NULL DEFAULT '',
    day               date NOT NULL,
    released_cells    integer NOT NULL,
    suppressed_cells  integer NOT NULL,
    metadata          jsonb NOT NULL DEFAULT '{}',
    computed_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (segment, day)
);

-- Dealer visits long enough to be a service (GeofenceParams.dealer_min_dwell_s, set per deployment):
-- flagged when the visit is written, so service follow-up reads them without re-deriving the rule.
ALTER TABLE geofence_visits ADD COLUMN service_visit boolean NOT NULL DEFAULT false;
CREATE INDEX geofence_visits_service_idx ON geofence_visits (geofence_id, entered_at) WHERE service_visit;

CREATE VIEW dealer_visits_view AS
SELECT v.visit_id, v.device_key, d.device_id, d.vehicle_id, v.geofence_id, g.name AS dealer, g.owner_org,
       v.entered_at, v.exited_at, v.dwell_s, v.service_visit
FROM geofence_visits v
JOIN geofences g USING (geofence_id)
JOIN devices d USING (device_key)
WHERE g.kind = 'dealer';
