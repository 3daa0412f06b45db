"""Every command and Python snippet in README.md works as printed.

Commands are checked the way ``didlab`` starts: the pre-check composes every job's config
and validates it (simulator, estimators, experiment options, the data file) without
running it, so a README line that would exit 2 fails here. Python snippets run in order in
one namespace, as a reader pasting them into a session would. Full runs of the commands
are covered by the CLI tests (shortened); commands with placeholders a reader must fill
(``outputs/DATE/TIME-PID``, ``my.dta``) are listed and skipped.
"""

import re
import shlex
from pathlib import Path

import pytest

from experiments.cli import _precheck

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
#: text in a command that marks a placeholder the reader replaces
PLACEHOLDERS = ("DATE/TIME-PID", "my.dta", "my.csv", "my_panel")


def blocks(language: str) -> list[str]:
    """The README's fenced code blocks of ``language`` (``bash`` also takes unlabelled
    blocks and ``sh``)."""
    out = []
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", README, flags=re.S):
        if lang == language or (language == "bash" and lang in ("", "sh", "console")):
            out.append(body)
    return out


def commands() -> list[str]:
    """Every ``didlab`` command in the README's shell blocks, continuation lines joined and
    trailing comments dropped."""
    out = []
    for body in blocks("bash"):
        joined = re.sub(r"\\\n\s*", " ", body)
        for line in joined.splitlines():
            line = line.strip()
            if not re.match(r"^(\.venv/bin/)?didlab(\s|$)", line):
                continue
            out.append(re.sub(r"\s+#.*$", "", line))
    return out


COMMANDS = commands()


def test_the_readme_has_commands_and_snippets():
    assert len(COMMANDS) >= 20
    assert len(blocks("python")) >= 3


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_validates(command, tmp_path):
    args = shlex.split(command)[1:]
    if any(p in command for p in PLACEHOLDERS) or (args and args[0] == "collect"):
        pytest.skip("a placeholder the reader fills in")
    if args == ["designs"]:                       # a listing, not a run: it must print
        from experiments.designs import library, listing

        assert all(name in listing() for name in library())
        return
    try:
        _precheck([*args, f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sweep"])
    except SystemExit as exc:  # pragma: no cover - the failure message is the point
        pytest.fail(f"`{command}` exits {exc.code} as printed in the README")


def test_readme_python_snippets_run_in_order(monkeypatch):
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    for i, body in enumerate(blocks("python")):
        try:
            exec(compile(body, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as exc:  # pragma: no cover
            pytest.fail(f"README python block {i + 1} fails as printed: {type(exc).__name__}: {exc}")
