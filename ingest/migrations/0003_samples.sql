-- Samples: one row per moment of one vehicle, the catalog's signals as typed columns.
--
-- Why GPS positions live in this table, not beside it: the agent reads OBD and GPS into the same
-- sample (one timestamp, one sequence number), so one row keeps them aligned without a join, one
-- binary COPY writes both, and analytics (trips, speeding against limits, harsh events with a
-- place) reads one relation in time order. Columns a sample lacks are NULL, which costs one bit in
-- the heap and nothing in the columnstore.
--
-- Column types follow the catalog: `real` where the signal's range / resolution fits float32's 24-bit
-- mantissa, `double precision` where it does not (latitude, longitude at 1e-7 deg; odometer).
-- interval_ms is how long the sample stands for (the gap to the next sample of its batch, capped),
-- set by ingest so that rollups can integrate speed to distance with plain aggregates.
--
-- Lines starting with `--@native ` or `--@timescaledb ` apply to that backend only (ingest.migrate).

CREATE TABLE samples (
    device_key                 integer NOT NULL,
    ts                         timestamptz NOT NULL,
    boot_id                    uuid NOT NULL,
    seq                        bigint NOT NULL,
    interval_ms                integer,
    speed                      real,
    rpm                        real,
    engine_load                real,
    throttle_pos               real,
    coolant_temp               real,
    intake_temp                real,
    maf                        real,
    intake_pressure            real,
    fuel_level                 real,
    fuel_rate                  real,
    control_module_voltage     real,
    timing_advance             real,
    ambient_air_temp           real,
    barometric_pressure        real,
    run_time                   real,
    distance_since_dtc_clear   real,
    distance_w_mil             real,
    oil_temp                   real,
    odometer                   double precision,
    absolute_load              real,
    battery_voltage            real,
    latitude                   double precision,
    longitude                  double precision,
    altitude                   real,
    gps_speed                  real,
    course                     real,
    hdop                       real,
    satellites                 real,
    fix_mode                   real,
    extras                     jsonb            -- values of signals outside the catalog, by name
)
--@native PARTITION BY RANGE (ts)
;

--@timescaledb SELECT create_hypertable('samples', by_range('ts', INTERVAL '1 day'));

-- The one index: it serves "this vehicle between these times" and is the de-duplication key
-- (device, boot, seq) a redelivered sample collides on. It must include ts, the partitioning
-- column, on both backends; a redelivered sample carries the same ts, so that costs nothing.
CREATE UNIQUE INDEX samples_device_ts_key ON samples (device_key, ts, boot_id, seq);

-- Columnstore: segment by vehicle (queries are per vehicle), newest first inside a segment.
--@timescaledb ALTER TABLE samples SET (timescaledb.enable_columnstore = true,
--@timescaledb     timescaledb.segmentby = 'device_key', timescaledb.orderby = 'ts DESC');
