-- Why a request is failed: in its reconcile pipeline (which stage), in a teardown, or
-- before it was ever reconciled. Decides what may resume it and what the sweepers touch.
ALTER TABLE requests ADD COLUMN failure_kind text;
ALTER TABLE requests ADD COLUMN failed_stage text;
UPDATE requests
   SET failure_kind = CASE WHEN last_error LIKE 'teardown failed in %' THEN 'teardown' ELSE 'pipeline' END
 WHERE status = 'failed';

-- A failed teardown is not expired again and again: the user deletes (retries) it.
DROP INDEX requests_due_for_expiry;
CREATE INDEX requests_due_for_expiry ON requests (expires_at)
    WHERE status = 'ready' OR (status = 'failed' AND failure_kind = 'pipeline');

-- The anti-entropy sweeper looks for work that stopped moving.
CREATE INDEX requests_in_flight ON requests (updated_at)
    WHERE status IN ('queued', 'reconciling', 'expiring', 'deleting');
