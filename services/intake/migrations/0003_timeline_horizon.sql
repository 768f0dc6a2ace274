-- The transaction that wrote each timeline entry. The /v1/events feed reads in
-- (txid, seq) order and only below the oldest transaction still running, so entries
-- appear to followers in a stable order without serialising every writer on one lock.
ALTER TABLE request_timeline ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX request_timeline_feed ON request_timeline (txid, seq);
