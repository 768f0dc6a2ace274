-- How a teardown ended: the commit that removed the manifests from the GitOps repository,
-- when the request became deleted, and whether the platform deleted the namespace (false
-- when cluster apply is off). Additive: requests deleted before stay null.
ALTER TABLE requests ADD COLUMN git_removal_commit_sha text;
ALTER TABLE requests ADD COLUMN deleted_at timestamptz;
ALTER TABLE requests ADD COLUMN namespace_deleted boolean;
