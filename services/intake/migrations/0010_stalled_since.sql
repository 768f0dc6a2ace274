-- How long a request has been stuck: the anti-entropy re-drives stalled work every deadline
-- and each retry bumps updated_at, so updated_at alone never ages past one deadline. The time
-- the request last changed before its first retry is kept until it moves on.
ALTER TABLE requests ADD COLUMN stalled_since timestamptz;

-- The metrics loop counts the requests still in play (every status but the terminal ones,
-- which only grow) by status and class, and their age, every few seconds on every replica:
-- this index holds only those rows.
CREATE INDEX requests_in_play ON requests (status, class, updated_at, stalled_since)
    WHERE status NOT IN ('rejected', 'deleted');
