-- Every rendered bundle, one per request generation. The first render of a generation is
-- kept: a later event for the same generation re-announces it instead of rendering anew,
-- so a generation's digest never changes.
CREATE TABLE bundles (
    request_id  text NOT NULL,
    generation  integer NOT NULL,
    namespace   text NOT NULL,
    gitops_path text NOT NULL,
    digest      text NOT NULL,
    -- [{"name": ..., "content": ...}] in bundle order; names are relative to gitops_path.
    files       jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, generation)
);
