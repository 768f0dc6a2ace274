-- The stage-latency histograms used to find where each stage began by reading the timeline
-- (three max(occurred_at) and one EXISTS per request, a sixth of intake's statements). The
-- record now keeps those times itself and is written anyway. (A constant default: adding the
-- column rewrites nothing. A run in flight during the upgrade may miss one stage observation.)
ALTER TABLE requests ADD COLUMN stage_marks jsonb NOT NULL DEFAULT '{}';
