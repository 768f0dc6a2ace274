-- The kit's tables, created in every service schema (search_path is the schema).

-- Outgoing events, written in the same transaction as the state change that caused them.
CREATE TABLE outbox (
    seq              bigserial PRIMARY KEY,
    event_id         uuid NOT NULL UNIQUE,
    event_type       text NOT NULL,
    subject          text NOT NULL,
    payload          bytea NOT NULL,
    headers          jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    published_at     timestamptz,
    publish_attempts integer NOT NULL DEFAULT 0,
    last_error       text
);
-- The relay only ever scans unpublished rows.
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;

-- Incoming events already applied, per consumer: a redelivery finds its row and does nothing.
CREATE TABLE inbox (
    consumer    text NOT NULL,
    event_id    uuid NOT NULL,
    event_type  text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Events a consumer gave up on after its retries (or could not decode), for operators to replay.
CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    consumer    text NOT NULL,
    event_id    uuid,
    event_type  text,
    subject     text NOT NULL,
    stream_seq  bigint,
    payload     bytea NOT NULL,
    headers     jsonb NOT NULL DEFAULT '{}'::jsonb,
    error       text NOT NULL,
    attempts    integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz
);
