-- Grafana's database login: read-only, and only what the dashboard needs (the hourly/daily rollups
-- and the device ids to label them). Not the samples, not owners, consents or anything personal:
-- people read those through the portal's consent-scoped, audited API. Idempotent; run after
-- `vinsight db migrate` (compose.yaml: the db-grants one-shot; bare metal: by hand):
--   psql -v ON_ERROR_STOP=1 -d vinsight -v grafana_pw=... -f grafana-reader.sql
-- Optional: -v reader=<role name> (default grafana_reader).
\if :{?reader}
\else
\set reader grafana_reader
\endif
SELECT format('CREATE ROLE %I LOGIN', :'reader')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'reader') \gexec
ALTER ROLE :"reader" WITH LOGIN PASSWORD :'grafana_pw';
ALTER ROLE :"reader" SET default_transaction_read_only = on;
ALTER ROLE :"reader" SET statement_timeout = '30s';
GRANT USAGE ON SCHEMA public TO :"reader";
GRANT SELECT ON samples_hourly, samples_daily, samples_hourly_stats, samples_daily_stats TO :"reader";
GRANT SELECT (device_key, device_id, status) ON devices TO :"reader";
