"""Every option and argument of every `sigil` command has a help text, and the options every
command shares come after the command's own, under their own heading."""

import re
import subprocess

from conftest import SIGIL


def help_of(path):
    return subprocess.run([SIGIL, *path, "--help"], capture_output=True, text=True, check=True).stdout


def subcommands(text):
    out, inside = [], False
    for line in text.splitlines():
        if line.startswith("Commands:"):
            inside = True
            continue
        if inside:
            if not line.startswith("  "):
                inside = False
                continue
            name = line.split()[0]
            if name != "help":
                out.append(name)
    return out


def test_every_option_has_help_and_shared_options_come_last():
    missing, misplaced, seen = [], [], 0

    def walk(path):
        nonlocal seen
        text = help_of(path)
        lines = text.splitlines()
        section = None
        for i, line in enumerate(lines):
            if re.match(r"^[A-Z][\w ]*:$", line):
                section = line
                continue
            if section in ("Options:", "Arguments:", "Shared options:") and re.match(r"^\s+(-\w, )?(--[\w-]+|<)", line):
                seen += 1
                rest = re.sub(r"^\s+(-\w, )?(--[\w-]+( <[^>]+>)?|<[^>]+>)( <[^>]+>)?", "", line).strip()
                follows = i + 1 < len(lines) and lines[i + 1].startswith("          ")
                if not rest and not follows:
                    missing.append(f"sigil {' '.join(path)}: {line.strip()}")
        if path and "Shared options:" in text:
            if "Options:" in text and text.index("Shared options:") < text.index("Options:"):
                misplaced.append(" ".join(path))
        elif path:
            misplaced.append(" ".join(path) + " (no shared options)")
        for sub in subcommands(text):
            walk(path + [sub])

    walk([])
    assert seen > 100
    assert not missing, "\n".join(missing)
    assert not misplaced, misplaced
