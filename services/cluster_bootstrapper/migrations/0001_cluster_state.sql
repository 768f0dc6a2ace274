-- One row per request: the latest generation this service acted on and what it found.
-- The drift scan walks the applied, not torn-down rows.
CREATE TABLE environments (
    request_id      text PRIMARY KEY,
    generation      integer NOT NULL,
    region          text NOT NULL,
    namespace       text NOT NULL,
    commit_sha      text,
    cluster_status  text NOT NULL,
    drift_status    text NOT NULL,
    drift_summary   jsonb NOT NULL DEFAULT '[]'::jsonb,
    applied_at      timestamptz,
    last_scanned_at timestamptz,
    torn_down_at    timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX environments_to_scan ON environments (last_scanned_at NULLS FIRST)
    WHERE cluster_status = 'applied' AND torn_down_at IS NULL;

-- Every object of a generation's bundle: applied (with the manifest the drift scan
-- re-applies to self-heal) or skipped with a note (e.g. the Argo CD CRD is not installed).
CREATE TABLE applied_objects (
    request_id   text NOT NULL,
    generation   integer NOT NULL,
    region       text NOT NULL,
    namespace    text NOT NULL DEFAULT '',  -- '' for cluster-scoped objects (the Namespace)
    kind         text NOT NULL,
    name         text NOT NULL,
    api_version  text NOT NULL,
    applied_at   timestamptz,
    digest       text NOT NULL,
    apply_order  integer NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN ('applied', 'skipped')),
    note         text,
    manifest     jsonb NOT NULL,
    PRIMARY KEY (request_id, generation, api_version, kind, namespace, name)
);

-- What a bootstrap or drift scan saw. Scans add a row only when the observed state changed
-- (and on every correction), so the table grows with incidents, not with time.
CREATE TABLE drift_observations (
    id           bigserial PRIMARY KEY,
    request_id   text NOT NULL,
    generation   integer NOT NULL,
    observed_at  timestamptz NOT NULL,
    status       text NOT NULL,
    summary      jsonb NOT NULL DEFAULT '[]'::jsonb,
    trigger      text NOT NULL CHECK (trigger IN ('bootstrap', 'scan'))
);
CREATE INDEX drift_observations_by_request ON drift_observations (request_id, observed_at);
