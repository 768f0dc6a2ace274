-- Replica of the policy service's class catalog, fed by class.upserted, for fail-fast validation.
CREATE TABLE environment_classes (
    name       text PRIMARY KEY,
    definition jsonb NOT NULL,
    revision   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The lifecycle record of every environment request. Intake is its single writer.
CREATE TABLE requests (
    id                          text PRIMARY KEY,
    app                         text NOT NULL,
    team                        text NOT NULL,
    class                       text NOT NULL,
    region                      text NOT NULL,
    ttl_hours                   integer NOT NULL,
    owner                       text NOT NULL,
    repository                  text NOT NULL,
    revision                    text NOT NULL,
    labels                      jsonb NOT NULL DEFAULT '{}'::jsonb,
    status                      text NOT NULL,
    generation                  integer NOT NULL DEFAULT 0,
    version                     integer NOT NULL DEFAULT 1,
    created_at                  timestamptz NOT NULL,
    created_by                  text NOT NULL,
    updated_at                  timestamptz NOT NULL,
    expires_at                  timestamptz,
    approved_at                 timestamptz,
    approved_by                 text,
    approvals                   jsonb NOT NULL DEFAULT '[]'::jsonb,
    queued_at                   timestamptz,
    last_reconciled_at          timestamptz,
    last_error                  text,
    namespace                   text,
    gitops_path                 text,
    git_commit_sha              text,
    git_branch                  text,
    git_promotion_mode          text,
    git_promotion_branch        text,
    git_promotion_url           text,
    cluster_status              text,
    drift_status                text,
    drift_summary               jsonb NOT NULL DEFAULT '[]'::jsonb,
    quota_profile               text,
    policy_packs                jsonb NOT NULL DEFAULT '[]'::jsonb,
    estimated_monthly_cost_usd  double precision,
    policy_decision             jsonb,
    requires_approval           boolean NOT NULL DEFAULT false,
    approvals_required          integer NOT NULL DEFAULT 0,
    auto_reconcile              boolean NOT NULL DEFAULT false,
    plan                        jsonb,
    attestations                jsonb NOT NULL DEFAULT '[]'::jsonb
);
CREATE INDEX requests_by_created ON requests (created_at DESC, id DESC);
CREATE INDEX requests_by_team ON requests (team, created_at DESC, id DESC);
CREATE INDEX requests_by_status ON requests (status, updated_at);

-- Every event about a request, in the order intake saw it: the audit trail.
CREATE TABLE request_timeline (
    seq          bigserial PRIMARY KEY,
    request_id   text NOT NULL,
    event_id     uuid NOT NULL UNIQUE,
    event_type   text NOT NULL,
    source       text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    generation   integer,
    applied      boolean NOT NULL,
    status_after text NOT NULL,
    data         jsonb NOT NULL
);
CREATE INDEX request_timeline_by_request ON request_timeline (request_id, seq);

-- Idempotency-Key of create calls, per caller: a retry returns the request created first.
CREATE TABLE idempotency_keys (
    actor      text NOT NULL,
    key        text NOT NULL,
    body_hash  text NOT NULL,
    request_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (actor, key)
);
