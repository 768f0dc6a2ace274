-- A run that failed after rendering may have left files in Git and part of a namespace, so
-- such a failure now starts the TTL when the environment never became ready. Requests that
-- failed that way before this migration get the same expiry, counted from their last change.
UPDATE requests
   SET expires_at = updated_at + make_interval(hours => ttl_hours)
 WHERE status = 'failed' AND failure_kind = 'pipeline' AND expires_at IS NULL AND gitops_path IS NOT NULL;
