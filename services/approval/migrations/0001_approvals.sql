-- One row per request that passed policy: what it needs before it may proceed.
CREATE TABLE approval_requests (
    request_id          text PRIMARY KEY,
    class               text NOT NULL,
    team                text NOT NULL DEFAULT '',
    created_by          text NOT NULL,
    requires_approval   boolean NOT NULL,
    approvals_required  integer NOT NULL,
    status              text NOT NULL,   -- pending | approved | rejected
    created_at          timestamptz NOT NULL DEFAULT now(),
    decided_at          timestamptz
);

-- Each approver's decision with the attestation the approval service issued for it.
CREATE TABLE approvals (
    request_id  text NOT NULL REFERENCES approval_requests (request_id),
    approver    text NOT NULL,
    decision    text NOT NULL,           -- approved | rejected
    generation  integer NOT NULL,
    decided_at  timestamptz NOT NULL,
    reason      text,
    attestation text,
    PRIMARY KEY (request_id, approver)
);
