-- Who is working on an environment in its cluster right now: a bootstrap, a teardown or a
-- drift scan. The claim is taken in a short transaction before the Kubernetes calls and
-- released in the transaction that records their outcome, so no transaction stays open
-- while an API server answers. A holder that died leaves a claim that lapses at expires_at.
CREATE TABLE environment_leases (
    request_id  text PRIMARY KEY,
    holder      text NOT NULL,
    expires_at  timestamptz NOT NULL
);
