-- When a stage that could not reach a dependency tries again (request.stage_retrying);
-- null when nothing waits for a retry. Additive: older rows simply have none.
ALTER TABLE requests ADD COLUMN next_attempt_at timestamptz;
