"""``platformctl completion bash|zsh|fish``: shell completion scripts made from the parser.

The scripts are generated from the argparse parser itself (its subcommands, flags and the
values a flag takes), so a new command or flag completes without anyone editing a script.
Each script finds where on the command line the cursor is (``request create``, say) by
walking the words typed so far through the command tree, then offers that command's
subcommands and flags, or the values of the flag just typed (``-o``, ``--role``, ``--for``).
zsh uses the bash script through bashcompinit, which every zsh ships.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, field

SHELLS = ("bash", "zsh", "fish")


@dataclass
class Node:
    """One command: its subcommands, its flags and the values of flags that take a choice."""

    subcommands: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    values: dict[str, list[str]] = field(default_factory=dict)


def command_tree(parser: argparse.ArgumentParser) -> dict[str, Node]:
    """Every command of ``parser`` by its path (``""``, ``"request"``, ``"request create"``)."""
    tree: dict[str, Node] = {}

    def visit(path: str, current: argparse.ArgumentParser) -> None:
        node = tree.setdefault(path, Node())
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    node.subcommands.append(name)
                    visit(f"{path} {name}".strip(), child)
            elif action.option_strings and action.help != argparse.SUPPRESS:
                node.flags.extend(action.option_strings)
                if action.choices:
                    for flag in action.option_strings:
                        node.values[flag] = [str(choice) for choice in action.choices]

    visit("", parser)
    return tree


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    prog = parser.prog
    tree = command_tree(parser)
    return fish_script(prog, tree) if shell == "fish" else bash_script(prog, tree, zsh=shell == "zsh")


def _function_name(prog: str) -> str:
    return "_" + "".join(ch if ch.isalnum() else "_" for ch in prog)


def bash_script(prog: str, tree: dict[str, Node], *, zsh: bool = False) -> str:
    name = _function_name(prog)
    subcommands = "\n".join(
        f"        {shlex.quote(path)}) subs={shlex.quote(' '.join(node.subcommands))} ;;"
        for path, node in tree.items()
        if node.subcommands
    )
    words = "\n".join(
        f"        {shlex.quote(path)}) words={shlex.quote(' '.join(node.subcommands + node.flags))} ;;"
        for path, node in tree.items()
    )
    values = "\n".join(
        f"        {shlex.quote(path + '|' + flag)}) values={shlex.quote(' '.join(choices))} ;;"
        for path, node in tree.items()
        for flag, choices in node.values.items()
    )
    preamble = "autoload -U +X bashcompinit && bashcompinit\n" if zsh else ""
    return f"""# {prog} completion for {"zsh" if zsh else "bash"}: eval "$({prog} completion {"zsh" if zsh else "bash"})"
{preamble}{name}() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}}
    local path="" subs word values words i
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${{COMP_WORDS[i]}}
        subs=""
        case "$path" in
{subcommands}
        esac
        if [[ " $subs " == *" $word "* ]]; then
            path=${{path:+$path }}$word
        fi
    done
    values=""
    case "$path|$prev" in
{values}
    esac
    if [[ -n "$values" ]]; then
        COMPREPLY=($(compgen -W "$values" -- "$cur"))
        return 0
    fi
    words=""
    case "$path" in
{words}
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -F {name} {prog}
"""


def fish_script(prog: str, tree: dict[str, Node]) -> str:
    name = _function_name(prog)
    lines = [
        f"# {prog} completion for fish: {prog} completion fish | source",
        f"function {name}_path",
        "    set -l path",
        "    for word in (commandline -opc)[2..-1]",
        "        switch (string join ' ' $path)",
    ]
    for path, node in tree.items():
        if node.subcommands:
            lines += [
                f"            case {_fish_quote(path)}",
                f"                contains -- $word {' '.join(map(_fish_quote, node.subcommands))}; "
                "and set path $path $word",
            ]
    lines += ["        end", "    end", "    string join ' ' $path", "end", ""]
    lines.append(f"complete -c {prog} -f")
    for path, node in tree.items():
        at = f"test ({name}_path) = {_fish_quote(path)}"
        for flag, choices in node.values.items():
            lines.append(
                f"complete -c {prog} -n {_fish_quote(f'{at}; and test (commandline -opc)[-1] = {flag}')} "
                f"-a {_fish_quote(' '.join(choices))}"
            )
        offered = node.subcommands + node.flags
        lines.append(f"complete -c {prog} -n {_fish_quote(at)} -a {_fish_quote(' '.join(offered))}")
    return "\n".join(lines) + "\n"


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
