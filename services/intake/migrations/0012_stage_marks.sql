-- The stage-latency histograms used to find where each stage began by reading the timeline
-- (three max(occurred_at) and one EXISTS per request, a sixth of intake's statements). The
-- record now keeps those times itself and is written anyway.
ALTER TABLE requests ADD COLUMN stage_marks jsonb NOT NULL DEFAULT '{}';
ALTER TABLE requests ADD COLUMN first_ready_at timestamptz;
-- An environment that was ready before the upgrade must not count as ready for the first time
-- again. (A run in flight during the upgrade may miss one stage observation: nothing else.)
UPDATE requests r SET first_ready_at = t.at
    FROM (SELECT request_id, min(occurred_at) AS at FROM request_timeline
          WHERE status_after = 'ready' GROUP BY request_id) t
    WHERE t.request_id = r.id;
