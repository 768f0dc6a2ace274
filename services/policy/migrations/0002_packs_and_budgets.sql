-- Policy packs as data (one row per pack; seeded on first start, then admin-owned).
CREATE TABLE policy_packs (
    name        text PRIMARY KEY,
    definition  jsonb NOT NULL,
    seeded      boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text NOT NULL
);

-- One row per team policy has seen or an admin budgeted. The row is also the lock that
-- serialises the evaluations of one team's requests (SELECT ... FOR UPDATE), so two requests
-- evaluated at once cannot both fit under the same remaining budget.
CREATE TABLE teams (
    team                text PRIMARY KEY,
    monthly_budget_usd  double precision,
    budget_updated_at   timestamptz,
    budget_updated_by   text
);

-- The budget ledger: every request policy allowed, with its cost, until an approver rejects
-- it or its teardown is requested (released_at). Active = released_at IS NULL.
CREATE TABLE environments (
    request_id                  text PRIMARY KEY,
    team                        text NOT NULL,
    class                       text NOT NULL,
    estimated_monthly_cost_usd  double precision NOT NULL,
    reserved_at                 timestamptz NOT NULL DEFAULT now(),
    released_at                 timestamptz,
    released_because            text
);
CREATE INDEX environments_active_by_team ON environments (team) WHERE released_at IS NULL;

-- The decision record keeps what the event said: approvals and the budget check.
ALTER TABLE decisions
    ADD COLUMN requires_approval  boolean NOT NULL DEFAULT false,
    ADD COLUMN approvals_required integer NOT NULL DEFAULT 0,
    ADD COLUMN budget             jsonb;
