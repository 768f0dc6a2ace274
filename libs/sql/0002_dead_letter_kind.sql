-- Why an event is a dead letter: failed (its handler gave up), undecodable (it breaks its
-- contract), parked (a newer data_version than the consumer reads: replay after upgrading),
-- max_deliveries (the server stopped redelivering it: the process died on it every time).
ALTER TABLE dead_letters ADD COLUMN kind text NOT NULL DEFAULT 'failed';
UPDATE dead_letters SET kind = 'undecodable' WHERE event_id IS NULL;
