-- The creator's and each approver's stable subject (the token's `sub`), besides the actor.
-- The actor is the email claim falling back to the subject, so one person can show up as two
-- actors (a token with the email claim and one without); separation of duties and the
-- distinct-approvers rule compare subjects too. NULL: recorded before subjects were, or the
-- decision came from an older policy without them (then only actors are compared).
ALTER TABLE approval_requests ADD COLUMN created_by_subject text;
ALTER TABLE approvals ADD COLUMN approver_subject text;
