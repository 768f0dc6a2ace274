-- One login role per backend service, for a managed Postgres (RDS, Cloud SQL, Azure
-- Database) or any other. Each service connects as its own role and migrates its own
-- schema, which that role then owns; no role can read or write another service's schema,
-- so a cross-schema query fails with "permission denied" (docs/architecture.md, "Security
-- boundaries"; the end-to-end tests run with exactly these grants).
--
-- Run once per database as its owner (on RDS: the master user), e.g.
--   psql "host=<endpoint> dbname=platform user=<admin> sslmode=verify-full" -f deploy/postgres/roles.sql
-- then give each role a password out of band (never in this file) and put each DSN in its
-- service's Secret (deploy/README.md):
--   \password platform_intake
-- Re-running is harmless. The gateway has no role: it owns no data.
\set ON_ERROR_STOP on

SELECT format('CREATE ROLE %I LOGIN CONNECTION LIMIT %s', name, lim)
FROM (VALUES
    ('platform_intake', 40),
    ('platform_policy', 30),
    ('platform_approval', 30),
    ('platform_renderer', 30),
    ('platform_git_publisher', 30),
    ('platform_cluster_bootstrapper', 30)
) AS roles(name, lim)
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = name)
\gexec

-- CREATE on the database lets a role create its schema on its first migration
-- (`CREATE SCHEMA IF NOT EXISTS <service>` checks this privilege even when the schema exists).
SELECT format('GRANT CONNECT, CREATE ON DATABASE %I TO %I', current_database(), name)
FROM unnest(ARRAY[
    'platform_intake', 'platform_policy', 'platform_approval',
    'platform_renderer', 'platform_git_publisher', 'platform_cluster_bootstrapper'
]) AS name
\gexec

-- Postgres before 15 lets every role create objects in `public`; nothing here uses it.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
