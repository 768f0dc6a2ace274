-- Who rejected a request and why (a rejection ends the record, so one per request).
ALTER TABLE approval_requests ADD COLUMN rejected_by text;
ALTER TABLE approval_requests ADD COLUMN reject_reason text;
