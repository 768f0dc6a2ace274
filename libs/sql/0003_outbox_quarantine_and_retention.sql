-- Poison outbox rows, per-request publish order, and indexes for the retention pruner.

-- The envelope's subject (a request id or class name): the relay publishes the rows of one
-- key in seq order. Null (dead-letter replays) means no order to keep.
ALTER TABLE outbox ADD COLUMN ordering_key text;
-- Permanent refusals (too large, no stream covers the subject, a 4xx from JetStream);
-- publish_attempts keeps counting every failure, transient ones included.
ALTER TABLE outbox ADD COLUMN rejections integer NOT NULL DEFAULT 0;
-- Set when the relay gave up on the row; a dead letter of kind 'outbox' points at it.
ALTER TABLE outbox ADD COLUMN quarantined_at timestamptz;
-- Rows pending at upgrade keep their order: their CloudEvents header holds the subject.
UPDATE outbox SET ordering_key = headers ->> 'ce-subject' WHERE published_at IS NULL;

DROP INDEX outbox_unpublished;
-- A relay pass scans the rows it may publish, and checks per row for an earlier pending
-- row of the same key.
CREATE INDEX outbox_pending ON outbox (seq) WHERE published_at IS NULL AND quarantined_at IS NULL;
CREATE INDEX outbox_pending_by_key ON outbox (ordering_key, seq)
    WHERE published_at IS NULL AND quarantined_at IS NULL;

-- The quarantined outbox row a dead letter of kind 'outbox' stands for (its payload stays
-- in the outbox: replaying the dead letter releases the row to the relay).
ALTER TABLE dead_letters ADD COLUMN outbox_seq bigint;

-- Retention deletes old rows in small batches; BRIN indexes find them at almost no cost
-- per insert, since both tables are written in time order.
CREATE INDEX outbox_created_brin ON outbox USING brin (created_at);
CREATE INDEX inbox_received_brin ON inbox USING brin (received_at);
