"""``platformd dev --replicas 2``: two processes of every backend service, each with its own
ops port and log file named in the banner, and both processes of each service take a share
of the work (they consume the same durable consumers)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from services.tools.platformd.dev_stack import DEV_JWT_SECRET, OPS_PORT_ORDER
from tests.support.fault_load import create_with_retries, preview_body, wait_until_final
from tests.support.platformd_dev import platformd_dev
from tests.support.stack import mint_token

pytestmark = [
    # The printed development secret is short on purpose; strict mode refuses it.
    pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning"),
]

ROUND = 8  # requests per round; rounds go on until every replica has handled events
MAX_ROUNDS = 5
HANDLED_OK = re.compile(r'^platform_events_handled_total\{[^}]*outcome="ok"[^}]*\} (\S+)$', re.MULTILINE)


def handled_events(ops_url: str) -> float:
    """Events this process's consumers handled successfully, from its /metrics."""
    metrics = httpx.get(f"{ops_url}/metrics", timeout=5).text
    return sum(float(value) for value in HANDLED_OK.findall(metrics))


def test_every_backend_runs_twice_and_both_replicas_work(tmp_path: Path) -> None:
    with platformd_dev(tmp_path, start_timeout=240, arguments=["--replicas", "2"]) as dev:
        banner = dev.banner()
        assert "starting services (2 processes of each backend) ..." in banner
        ops: dict[str, str] = {}
        for service in OPS_PORT_ORDER:
            for replica in (1, 2):
                name = f"{service}-{replica}"
                line = re.search(
                    rf"^\s*{re.escape(name.replace('_', '-'))}\s+(http://\S+)\s+{re.escape(name)}\.log$",
                    banner,
                    re.MULTILINE,
                )
                assert line, f"the banner does not name {name}'s ops port and log:\n{banner}"
                ops[name] = line.group(1)
        assert len(set(ops.values())) == len(ops) == 12, ops
        assert re.search(r"^\s*gateway\s+http://\S+\s+gateway\.log", banner, re.MULTILINE), banner

        token = mint_token("alice@example.com", "requester", ["payments"], secret=DEV_JWT_SECRET)
        ids: list[str] = []
        idle = list(ops)
        with httpx.Client(
            base_url=dev.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        ) as api:
            while idle and len(ids) < ROUND * MAX_ROUNDS:
                for _ in range(ROUND):
                    app = f"replicas-{len(ids)}"
                    ids.append(create_with_retries(api, preview_body(app), app, time.monotonic() + 30))
                final = wait_until_final(api, ids, timeout=120)
                assert [r["status"] for r in final.values()] == ["ready"] * len(ids), [
                    r.get("last_error") for r in final.values()
                ]
                idle = [name for name, url in ops.items() if handled_events(url) == 0]
        assert idle == [], f"these replicas handled no event in {len(ids)} requests: {idle}"

        logs = dev.state_dir / "logs"
        for name in ops:
            assert (logs / f"{name}.log").stat().st_size > 0, name
        # Each git-publisher keeps its own working repository.
        for replica in (1, 2):
            assert (dev.state_dir / f"git-publisher-repo-{replica}" / "HEAD").exists(), replica
        assert not (dev.state_dir / "git-publisher-repo").exists()
