-- The expiry sweeper looks for environments past their expiry in a few statuses only.
CREATE INDEX requests_due_for_expiry ON requests (expires_at) WHERE status IN ('ready', 'failed');
