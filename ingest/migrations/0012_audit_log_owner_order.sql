-- The owner's "who accessed my data" list reads the audit rows about one owner, newest first
-- (ORDER BY audit_id DESC, keyset on audit_id). The index on (owner_id, at) could not give that
-- order, so PostgreSQL walked the primary key backwards through everyone's rows, filtering for the
-- owner: ~100 ms at 400 k rows, growing with the whole log, and a full scan for an owner whom few
-- read. Keyed on (owner_id, audit_id) the list reads only its page (~0.5 ms); export and erasure
-- find the owner's rows through it as before. Same width, so the audit insert costs the same.

CREATE INDEX audit_log_owner_recent_idx ON audit_log (owner_id, audit_id);
DROP INDEX audit_log_owner_idx;
