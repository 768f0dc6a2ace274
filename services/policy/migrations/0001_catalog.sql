-- The class catalog. `revision` increases with every change and travels in class.upserted,
-- so replicas keep the newest definition whatever order events arrive in.
CREATE TABLE environment_classes (
    name        text PRIMARY KEY,
    definition  jsonb NOT NULL,
    revision    bigint NOT NULL DEFAULT 1,
    seeded      boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text NOT NULL
);

CREATE TABLE quota_profiles (
    name        text PRIMARY KEY,
    definition  jsonb NOT NULL,
    seeded      boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text NOT NULL
);

-- One decision per request: the audit record of what policy said and why.
CREATE TABLE decisions (
    request_id  text PRIMARY KEY,
    team        text NOT NULL,
    class       text NOT NULL,
    outcome     text NOT NULL,
    reasons     jsonb NOT NULL,
    plan        jsonb,
    evaluated_at timestamptz NOT NULL DEFAULT now()
);
