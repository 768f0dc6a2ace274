"""The examples every ``platformctl <command> --help`` ends with, by command."""

from __future__ import annotations

EXAMPLES: dict[str, tuple[str, ...]] = {
    "login": (
        "platformctl login --api https://platform.example.com",
        "platformctl login --browser",
    ),
    "logout": ("platformctl logout", "platformctl logout --context staging"),
    "whoami": ("platformctl whoami", "platformctl whoami -o jsonpath='{.role}'"),
    "config": ("platformctl config get-contexts -o table",),
    "config get-contexts": ("platformctl config get-contexts -o table",),
    "config use-context": ("platformctl config use-context staging",),
    "config set-context": (
        "platformctl config set-context local --api http://127.0.0.1:8080 --team payments",
        "platformctl config set-context local --output ''     # remove the default output",
    ),
    "token": ("platformctl token mint --role requester --actor alice@example.com --team payments",),
    "token mint": (
        "export PLATFORM_TOKEN=$(platformctl token mint --role requester --actor alice@example.com "
        "--team payments)",
        "platformctl token mint --role admin --actor root@example.com --ttl 30m",
    ),
    "classes": ("platformctl classes", "platformctl classes -o jsonpath='{.items[*].name}'"),
    "classes list": ("platformctl classes list -o yaml",),
    "classes get": ("platformctl classes get --name preview -o jsonpath='{.allowed_regions}'",),
    "classes apply": (
        "platformctl classes apply -f classes.yaml",
        "cat class.json | platformctl classes apply -f -",
    ),
    "quota-profiles": ("platformctl quota-profiles",),
    "quota-profiles list": ("platformctl quota-profiles list -o table",),
    "quota-profiles get": ("platformctl quota-profiles get --name small -o yaml",),
    "quota-profiles apply": ("platformctl quota-profiles apply -f profiles.yaml",),
    "policy-packs": ("platformctl policy-packs",),
    "policy-packs list": ("platformctl policy-packs list -o table",),
    "policy-packs get": ("platformctl policy-packs get --name cost-guardrails -o yaml > pack.yaml",),
    "policy-packs apply": ("platformctl policy-packs apply -f pack.yaml",),
    "teams": ("platformctl teams get --team payments",),
    "teams get": (
        "platformctl teams get --team payments",
        "platformctl teams get -o jsonpath='{.remaining_usd}'",
    ),
    "teams set-budget": (
        "platformctl teams set-budget --team payments --monthly-usd 5000",
        "platformctl teams set-budget --team payments --clear",
    ),
    "request": ("platformctl request create -f request.yaml --wait",),
    "request create": (
        "platformctl request create -f request.yaml --wait --timeout 10m",
        "platformctl request create -f request.json --revision \"$GIT_SHA\" -o jsonpath='{.id}'",
        "platformctl request create --app payments-api --team payments --class preview --region us-east-1 "
        "--ttl 24 --owner alice@example.com --repo https://github.com/acme/payments.git",
        "platformctl request create -f request.yaml --dry-run",
    ),
    "request list": (
        "platformctl request list --team payments --status ready -o table",
        "platformctl request list -o jsonpath='{.items[*].id}'",
    ),
    "request get": ("platformctl request get --id req-0123456789abcdef -o jsonpath='{.status}'",),
    "request events": ("platformctl request events --id req-0123456789abcdef -o table",),
    "request wait": (
        "platformctl request wait --id req-0123456789abcdef --timeout 5m",
        "platformctl request wait --id req-0123456789abcdef --for deleted",
    ),
    "request approve": (
        'platformctl request approve --id req-0123456789abcdef --approval-secret "$SECRET" --wait',
    ),
    "request reject": ("platformctl request reject --id req-0123456789abcdef --reason 'use staging'",),
    "request reconcile": ("platformctl request reconcile --id req-0123456789abcdef --wait",),
    "request extend": ("platformctl request extend --id req-0123456789abcdef --ttl 48",),
    "request delete": ("platformctl request delete --id req-0123456789abcdef --wait",),
    "events": ("platformctl events tail",),
    "events tail": (
        "platformctl events tail --id req-0123456789abcdef",
        "platformctl events tail --from-start --count 10 -o json",
    ),
    "events dlq": ("platformctl events dlq --service intake -o table",),
    "events replay": (
        "platformctl events replay --consumer git-publisher --from 1 --dry-run -o table",
        "platformctl events replay --consumer cluster-bootstrapper --from 2h",
        "platformctl events replay --service intake --id 7",
    ),
    "completion": (
        'eval "$(platformctl completion bash)"          # in ~/.bashrc',
        'eval "$(platformctl completion zsh)"           # in ~/.zshrc',
        "platformctl completion fish | source           # in ~/.config/fish/config.fish",
    ),
}


def examples_epilog(command: str) -> str | None:
    """The ``examples:`` block of ``command`` (``"request create"``), if it has one."""
    lines = EXAMPLES.get(command)
    return "examples:\n" + "\n".join(f"  {line}" for line in lines) if lines else None
