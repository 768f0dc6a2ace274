-- A release can be handled before the reservation it undoes: request.submitted and
-- request.teardown_requested reach policy through separate durable consumers (and, with
-- several replicas, separate processes), so a request deleted right after it was created may
-- have its teardown handled first. The release then inserts the row itself, as a tombstone:
-- released_at set, never reserved (no cost, no reserved_at). The reservation that comes later
-- finds the row (INSERT ... ON CONFLICT DO NOTHING) and reserves nothing, so the deleted
-- request never counts against its team's budget.
ALTER TABLE environments
    ALTER COLUMN estimated_monthly_cost_usd DROP NOT NULL,
    ALTER COLUMN reserved_at DROP NOT NULL;
