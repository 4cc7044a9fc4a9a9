-- Consents in the partner feed.
--
-- The feed sends an organisation the trips, events and leads it may see, in version order. A trip
-- recorded before its owner consented has a version the organisation's cursor passed long ago (it
-- was skipped then, rightly: there was no consent), so the feed alone would never deliver it; a
-- revocation would leave the partner unaware that what it holds is no longer covered. Each change of
-- a consent to an organisation (granted, narrowed or widened, revoked, erased) is therefore a
-- change of its own in that organisation's feed, stamped from the same commit-ordered sequence: a
-- partner sees the grant at the point it became effective and backfills the owner's history from
-- the list endpoints, and sees the revocation before anything that follows it.

ALTER TABLE consents ADD COLUMN change_version bigint NOT NULL DEFAULT 0;

-- An update that changes nothing (revoking a consent already revoked) is not a change to announce.
-- The lock vinsight_feed_stamp takes orders a grant or a revocation after a writer of trips that is
-- mid-transaction (an analytics batch, well under a second): it takes effect when it commits.
CREATE TRIGGER consents_feed_stamp BEFORE INSERT ON consents
    FOR EACH ROW EXECUTE FUNCTION vinsight_feed_stamp();
CREATE TRIGGER consents_feed_restamp BEFORE UPDATE ON consents
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION vinsight_feed_stamp();
CREATE TRIGGER consents_feed_tombstone AFTER DELETE ON consents
    FOR EACH ROW EXECUTE FUNCTION vinsight_feed_tombstone('consent', 'consent_id');

-- Consents that exist already get a version now, so a partner's next read announces them once.
UPDATE consents SET change_version = -1;

CREATE INDEX consents_feed_idx ON consents (org_id, change_version);
