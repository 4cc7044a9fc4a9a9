-- One dead letter per refused message, however often the broker delivers it.
--
-- A QoS 1 message is delivered again when the worker stopped between committing a flush and
-- acknowledging it (a crash, a restart, a lost connection). Its valid samples are idempotent
-- (primary keys), but its dead letters were inserted a second time, so an operator counting
-- refusals saw double. Each dead letter now carries a fingerprint of the message (topic and payload
-- as received) and, for a refused sample, the sample's index in it; a delivery of a message already
-- dead-lettered for the same reason bumps that row's delivery count and last-received time instead
-- of adding a row (a different reason, say the device was registered in between, is a row of its own).
-- Nothing is lost: how often it came is still there. Rows written before this migration have no
-- fingerprint and are left as they are.

ALTER TABLE dead_letters
    ADD COLUMN fingerprint       bytea,
    ADD COLUMN deliveries        integer NOT NULL DEFAULT 1,
    ADD COLUMN last_received_at  timestamptz;

CREATE UNIQUE INDEX dead_letters_fingerprint_key ON dead_letters (fingerprint, reason) WHERE fingerprint IS NOT NULL;
