-- Per-vehicle figures the portal's list pages show, kept up to date when their inputs change
-- instead of being aggregated again on every read.
--
-- The dealer overview shows each vehicle's recorded distance and distance since its last service
-- (a sum over every daily rollup of the vehicle: a row per day driven, growing without bound), and
-- the insurer's policyholder list a 30-day distance-weighted score and event counts (a month of day
-- scores and of events per vehicle). Summed per read, those aggregates were most of the database
-- time of a 50-vehicle page. They change only when analytics writes new rollup-derived results or
-- a service is recorded, so they are computed then:
--   * the analytics runner refreshes the vehicles it analysed after each run, and every vehicle
--     whose summary is older than six hours (so the 30-day window keeps sliding for parked cars);
--   * linking a device to a vehicle (or unlinking it), and recording a service, refresh the vehicles
--     concerned in the same transaction (triggers below), whoever writes the row;
--   * erasing an owner deletes their vehicles, and with them these rows (ON DELETE CASCADE).
-- What stays live on every read: last seen and online, open trouble codes, battery and coolant.

CREATE TABLE vehicle_summaries (
    vehicle_id                 bigint PRIMARY KEY REFERENCES vehicles (vehicle_id) ON DELETE CASCADE,
    computed_at                timestamptz NOT NULL DEFAULT now(),
    -- all daily rollups of the vehicle's devices
    distance_recorded_km       double precision NOT NULL DEFAULT 0,
    first_day                  timestamptz,
    -- the newest service record (any organisation) and the distance driven since its day
    serviced_at                timestamptz,
    service_odometer_km        double precision,
    distance_since_service_km  double precision NOT NULL DEFAULT 0,
    -- day scores and driving events of the 30 days before computed_at
    score_30d                  double precision,
    distance_m_30d             double precision NOT NULL DEFAULT 0,
    scored_days_30d            integer NOT NULL DEFAULT 0,
    events_30d                 jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX vehicle_summaries_computed_idx ON vehicle_summaries (computed_at);

-- Recompute the summaries of ``ids`` and of every vehicle whose summary is missing or older than
-- ``older_than`` (NULL: none for that reason). With both NULL, every vehicle. Returns how many rows
-- were written.
CREATE FUNCTION vinsight_refresh_vehicle_summaries(ids bigint[] DEFAULT NULL, older_than interval DEFAULT NULL)
RETURNS integer LANGUAGE plpgsql AS $fn$
DECLARE
    n integer;
BEGIN
    INSERT INTO vehicle_summaries AS vs (vehicle_id, computed_at, distance_recorded_km, first_day, serviced_at,
                                         service_odometer_km, distance_since_service_km, score_30d, distance_m_30d,
                                         scored_days_30d, events_30d)
    SELECT v.vehicle_id, now(), coalesce(roll.distance_km, 0), roll.first_day, svc.serviced_at, svc.odometer_km,
           coalesce(roll.since_service_km, 0), sc.score_30d, coalesce(sc.distance_m, 0), coalesce(sc.days, 0),
           coalesce(ev.events, '{}'::jsonb)
    FROM vehicles v
    LEFT JOIN vehicle_summaries old ON old.vehicle_id = v.vehicle_id
    LEFT JOIN LATERAL (
        SELECT s.serviced_at, s.odometer_km FROM service_records s WHERE s.vehicle_id = v.vehicle_id
        ORDER BY s.serviced_at DESC LIMIT 1) svc ON true
    LEFT JOIN LATERAL (
        SELECT sum(r.distance_km) AS distance_km, min(r.bucket) AS first_day,
               sum(r.distance_km) FILTER (WHERE r.bucket >= date_trunc('day', svc.serviced_at)) AS since_service_km
        FROM devices d JOIN samples_daily r ON r.device_key = d.device_key
        WHERE d.vehicle_id = v.vehicle_id) roll ON true
    LEFT JOIN LATERAL (
        SELECT sum(s.score * greatest(s.distance_m, 1)) / nullif(sum(greatest(s.distance_m, 1))
                   FILTER (WHERE s.score IS NOT NULL), 0) AS score_30d,
               sum(s.distance_m) AS distance_m, count(s.score) AS days
        FROM devices d JOIN scores s ON s.device_key = d.device_key AND s.scope = 'day'
             AND s.period_start >= now() - interval '30 days'
        WHERE d.vehicle_id = v.vehicle_id) sc ON true
    LEFT JOIN LATERAL (
        SELECT jsonb_object_agg(x.kind, x.n) AS events FROM (
            SELECT e.kind, count(*) AS n FROM devices d JOIN driving_events e ON e.device_key = d.device_key
                 AND e.ts >= now() - interval '30 days'
            WHERE d.vehicle_id = v.vehicle_id GROUP BY e.kind) x) ev ON true
    WHERE (ids IS NULL AND older_than IS NULL)
       OR v.vehicle_id = ANY (ids)
       OR (older_than IS NOT NULL AND (old.vehicle_id IS NULL OR old.computed_at < now() - older_than))
    ON CONFLICT (vehicle_id) DO UPDATE SET
        computed_at = EXCLUDED.computed_at, distance_recorded_km = EXCLUDED.distance_recorded_km,
        first_day = EXCLUDED.first_day, serviced_at = EXCLUDED.serviced_at,
        service_odometer_km = EXCLUDED.service_odometer_km,
        distance_since_service_km = EXCLUDED.distance_since_service_km, score_30d = EXCLUDED.score_30d,
        distance_m_30d = EXCLUDED.distance_m_30d, scored_days_30d = EXCLUDED.scored_days_30d,
        events_30d = EXCLUDED.events_30d;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;

CREATE FUNCTION vinsight_vehicle_summaries_follow() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_TABLE_NAME = 'devices' AND TG_OP = 'UPDATE' THEN
        PERFORM vinsight_refresh_vehicle_summaries(array_remove(ARRAY[NEW.vehicle_id, OLD.vehicle_id], NULL));
    ELSE
        PERFORM vinsight_refresh_vehicle_summaries(ARRAY[NEW.vehicle_id]);
    END IF;
    RETURN NULL;
END
$fn$;
CREATE TRIGGER devices_link_summaries AFTER INSERT ON devices
    FOR EACH ROW WHEN (NEW.vehicle_id IS NOT NULL) EXECUTE FUNCTION vinsight_vehicle_summaries_follow();
CREATE TRIGGER devices_relink_summaries AFTER UPDATE OF vehicle_id ON devices
    FOR EACH ROW WHEN (OLD.vehicle_id IS DISTINCT FROM NEW.vehicle_id) EXECUTE FUNCTION vinsight_vehicle_summaries_follow();
CREATE TRIGGER service_records_summaries AFTER INSERT OR UPDATE ON service_records
    FOR EACH ROW EXECUTE FUNCTION vinsight_vehicle_summaries_follow();

SELECT vinsight_refresh_vehicle_summaries();

-- The driver's trip list reads each trip's score: from the index alone, not from the wide score
-- rows (their explanations make the table large, and 50 trips touched 50 of its pages).
DROP INDEX scores_trip_key;
CREATE UNIQUE INDEX scores_trip_key ON scores (trip_id) INCLUDE (device_key, score, eco_score) WHERE scope = 'trip';

-- Every audited read writes a row per vehicle; no query reads the audit log by organisation and
-- time (owners read theirs by owner, erasure deletes by owner), so that index only cost writes.
DROP INDEX audit_log_org_idx;
