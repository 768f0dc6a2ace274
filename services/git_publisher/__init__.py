"""git-publisher: commits rendered bundles to the GitOps repository and pushes them."""
