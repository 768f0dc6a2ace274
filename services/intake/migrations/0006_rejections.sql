-- Who ended a request in `rejected`, when and why (an approver's request.rejected, or
-- system:policy for a policy denial). Additive: requests rejected before stay null, their
-- timeline still holds the request.rejected event.
ALTER TABLE requests ADD COLUMN rejected_at timestamptz;
ALTER TABLE requests ADD COLUMN rejected_by text;
ALTER TABLE requests ADD COLUMN rejection_reason text;
