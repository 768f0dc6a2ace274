-- The secret key request ids of Idempotency-Key creates are derived with (HMAC of the actor
-- and the key): without it anyone knowing a user and a key they use could compute the id of
-- the request before it exists. Kept in the database so every replica and every restart
-- derive the same id (a dry run and the create after it agree); generated here once, from
-- PostgreSQL's strong random source (gen_random_uuid: 122 random bits each).
CREATE TABLE request_id_key (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    key       text NOT NULL
);
INSERT INTO request_id_key (key)
    VALUES (replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));
