"""platformctl's exit codes: what a script or CI job branches on.

One table, shown by ``platformctl --help`` and documented in docs/cli.md, so that the two
cannot drift from the code that returns them.
"""

from __future__ import annotations

EXIT_OK = 0
# The environment ended where it cannot go on by itself: failed, rejected, torn down (or a
# dry run that would be rejected). Not used for anything else, so `|| handle_failure` is safe.
EXIT_FAILED = 1
# Nothing was sent: the command line, a file it names, platformctl's config or a PLATFORM_*
# variable cannot be used.
EXIT_USAGE = 2
# The API (or the identity provider) could not be reached, or it refused the call for any
# reason other than who the caller is: 404, 409, 422, 5xx...
EXIT_API = 3
# Who the caller is: 401/403 from the API, a sign-in refused or expired.
EXIT_AUTH = 4
# `wait` (or `--wait`) gave up: the request is still on its way. 124 as timeout(1) uses.
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130
# platformctl itself failed (a bug); EX_SOFTWARE of sysexits.h.
EXIT_BUG = 70

EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "success (wait: the status was reached)"),
    (
        EXIT_FAILED,
        "the environment ended failed or rejected (or torn down); a dry run that would be rejected",
    ),
    (
        EXIT_USAGE,
        "usage error: a flag, a file it names, the config or a PLATFORM_* variable; nothing was sent",
    ),
    (
        EXIT_API,
        "API or network error: unreachable, or refused other than for who you are (404, 409, 422, 5xx)",
    ),
    (EXIT_AUTH, "authentication or authorization error: 401, 403, a sign-in refused or expired"),
    (EXIT_TIMEOUT, "wait (or --wait) timed out; the request is still on its way"),
)


def exit_code_table() -> str:
    """The table as ``platformctl --help`` shows it."""
    return "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES)
