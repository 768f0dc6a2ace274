-- One row per published request generation: what the API and audit read, and how a
-- redelivered `request.rendered` learns that its generation is already on the branch.
CREATE TABLE publications (
    request_id   text NOT NULL,
    generation   integer NOT NULL,
    commit_sha   text NOT NULL,
    branch       text NOT NULL,
    gitops_path  text NOT NULL,
    mode         text NOT NULL,
    -- false when the branch already held this bundle (e.g. redelivery after a crash between
    -- push and commit) and the row points at the earlier commit.
    committed    boolean NOT NULL,
    event_id     uuid NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, generation)
);

-- One row per torn-down request generation (the directory removed from the branch).
CREATE TABLE unpublications (
    request_id     text NOT NULL,
    generation     integer NOT NULL,
    -- The commit that removed the directory; null when it was never published.
    commit_sha     text,
    branch         text NOT NULL,
    gitops_path    text NOT NULL,
    event_id       uuid NOT NULL,
    unpublished_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, generation)
);
