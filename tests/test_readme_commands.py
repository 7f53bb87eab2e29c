"""Every `python` command in the code blocks of README.md and docs/*.md still works.

Each documented command is checked in two steps, in a scratch folder that sees the
checkout's files (``sweeps/``, ``tests/``, ...), in the order the document gives them
(so ``python -m mia_ray.audit.demo demo`` writes the files the next command audits):

1. **parse**: the command runs until its ``argparse`` parser has read the arguments,
   then stops. An option the program no longer has fails here, with argparse's message.
   Each parse runs in a process of its own forked from one interpreter that imported
   the heavy libraries once (:data:`FORK_SERVER`); the program's own code runs fresh.
2. **run** in its cheap form: as written, when the document shows its output (``$ cmd``
   followed by output lines, which must appear); with ``--dry-run`` or ``--smoke-test``
   appended when the program offers one; else as :data:`CHEAP_FORMS` says. A program
   with none of these was checked by step 1 only, which reads every option.

:data:`CHEAP_FORMS` maps a command pattern to its cheap form, for commands the default
cannot make cheap (they need AWS, a cluster or a GPU: parsed only, and the test id says
so). A new command needs no edit here unless it is one of those: a command that does
not stop at an argparse parser, or whose cheap form runs past :data:`LIMIT_S`, fails
and asks for a row.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LIMIT_S = 300
# Scratch folders get links to the checkout's entries, except what commands write.
NOT_LINKED = {"results", "store", "data", "demo", "audit_demo", ".venv", ".git"}

# (pattern on the command, cheap form, why). The first match wins. Forms: "skip",
# "parse" (arguments only), or extra arguments appended to the command.
CHEAP_FORMS: list[tuple[str, str, str]] = [
    (r"^python3 -m venv ", "skip",
     "creates a venv (the rest of its line is checked; the test command's line is pinned "
     "to .ci/run by tests/test_ci_command.py, and CI runs it)"),
    (r"s3://|gs://|--address|--trainer-gpus|--download", "parse",
     "needs AWS, a cluster or a GPU: arguments parsed only"),
    (r"^python -m analysis\.report ", "parse",
     "needs a finished sweep's results; tests/test_analysis.py builds a report"),
    (r"^python -m mia_ray\.audit --model model\.pt ", "parse",
     "illustrative file names; the demo's audit below runs with --dry-run"),
    (r"^python -m mia_ray\.audit\.demo\b", "--epochs 1",
     "one epoch writes the same files quickly"),
]

# Runs the documented program until argparse has parsed its arguments, then stops it.
PARSE_ONLY = r"""
import argparse, json, os, runpy, sys
original = argparse.ArgumentParser.parse_args
def parse_args(self, args=None, namespace=None):
    original(self, args, namespace)  # exits 2 on an unknown option or a bad value
    print("\nPARSED " + json.dumps(sorted(self._option_string_actions)), flush=True)
    os._exit(0)
argparse.ArgumentParser.parse_args = parse_args
target, sys.argv = sys.argv[1], sys.argv[1:]
if target == "-m":
    sys.argv = sys.argv[1:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
else:
    runpy.run_path(target, run_name="__main__")
"""


# The parse step's interpreter: it imports the libraries every documented program
# imports first (numpy, pandas, torch: most of a parse step's seconds) once, then
# forks a fresh child per command. The child enters the command's folder and runs
# PARSE_ONLY as ``python -c PARSE_ONLY ARGS...`` would there, so each command still
# runs its own program through its own argparse parser, in a process of its own; only
# the library imports are shared. The run step starts a real ``python``, as a user does.
FORK_SERVER = r"""
import json, os, sys, traceback
import numpy, pandas, torch  # noqa: F401
parse_only = sys.argv[1]
for line in sys.stdin:
    request = json.loads(line)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for fd, name in ((1, "stdout"), (2, "stderr")):
                os.dup2(os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
            os.chdir(request["cwd"])
            sys.argv = ["-c", *request["args"]]
            exec(compile(parse_only, "<string>", "exec"), {"__name__": "__main__"})
            code = 0
        except SystemExit as exc:  # as the interpreter turns it into an exit status
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), flush=True)
"""


@dataclass(frozen=True)
class Command:
    document: str
    line: int
    text: str
    output: tuple[str, ...]  # the lines the document shows after ``$ command``


def collect(path: Path) -> list[Command]:
    """Commands starting with ``python`` in the fenced code blocks of one document."""
    found = []
    lines = path.read_text().splitlines()
    fence = None
    i = 0
    while i < len(lines):
        raw = lines[i].strip()
        if raw.startswith("```"):
            fence = None if fence is not None else i
            i += 1
            continue
        if fence is None:
            i += 1
            continue
        start, prompt = i, raw.startswith("$ ")
        text = raw[2:] if prompt else raw
        while text.endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text[:-1].rstrip() + " " + lines[i].strip()
        output = []
        if prompt:  # the lines up to the next prompt or the fence's end are its output
            while i + 1 < len(lines) and not lines[i + 1].strip().startswith(("$ ", "```")):
                i += 1
                output.append(lines[i].strip())
        if re.match(r"python3?\s", text):
            found.append(Command(path.name, start + 1, text, tuple(o for o in output if o)))
        i += 1
    return found


def cheap_form(text: str) -> tuple[str, str] | None:
    for pattern, form, why in CHEAP_FORMS:
        if re.search(pattern, text):
            return form, why
    return None


def python_parts(text: str) -> list[list[str]]:
    """The ``python ...`` commands of a line (one, or several joined by ``&&``)."""
    parts = [shlex.split(p) for p in re.split(r"\s*&&\s*", text)]
    return [p for p in parts if p and re.fullmatch(r"python3?", p[0])]


def commands() -> list:
    params = []
    for document in DOCUMENTS:
        for command in collect(document):
            form = cheap_form(command.text)
            tag = f"{command.document}:{command.line}"
            if form and form[0] == "parse" and len(python_parts(command.text)) == 1:
                tag += " [parse only: " + re.split("[:;]", form[1])[0] + "]"
            params.append(pytest.param(command, id=tag))
    return params


@pytest.fixture(scope="module", autouse=True)
def fork_server():
    """The module's parse steps share one :class:`ForkServer`; it ends with the module."""
    yield
    process, ForkServer.process = ForkServer.process, None
    if process is not None:
        process.stdin.close()  # its loop ends at end of input
        process.wait(timeout=LIMIT_S)
        process.stdout.close()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> dict[str, Path]:
    """One scratch folder per document, shared by its commands in document order."""
    folders = {}
    for document in DOCUMENTS:
        folder = tmp_path_factory.mktemp(document.stem)
        for entry in ROOT.iterdir():
            if entry.name not in NOT_LINKED:
                (folder / entry.name).symlink_to(entry)
        folders[document.name] = folder
    return folders


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]), "OMP_NUM_THREADS": "1"}


def too_slow(what: str):
    pytest.fail(f"{what} ran past {LIMIT_S} s: give it a cheap form in CHEAP_FORMS "
                f"(tests/test_readme_commands.py)")


def run(argv: list[str], cwd: Path, what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, *argv], cwd=cwd, env=environment(), text=True,
                              capture_output=True, timeout=LIMIT_S)
    except subprocess.TimeoutExpired:
        too_slow(what)


class ForkServer:
    """The one :data:`FORK_SERVER` process of a test session, started when first asked."""

    process: subprocess.Popen | None = None

    @classmethod
    def parse(cls, args: list[str], cwd: Path, what: str) -> subprocess.CompletedProcess:
        """``python -c PARSE_ONLY *args`` in ``cwd``, as a fork of the server."""
        if cls.process is None or cls.process.poll() is not None:
            cls.process = subprocess.Popen(
                [sys.executable, "-c", FORK_SERVER, PARSE_ONLY], cwd=ROOT, env=environment(),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                start_new_session=True)  # its own group: a timeout ends it and its child
        with tempfile.TemporaryDirectory() as folder:
            out, err = Path(folder) / "stdout", Path(folder) / "stderr"
            cls.process.stdin.write(json.dumps(
                {"args": args, "cwd": str(cwd), "stdout": str(out), "stderr": str(err)}) + "\n")
            cls.process.stdin.flush()
            if not select.select([cls.process.stdout], [], [], LIMIT_S)[0]:
                os.killpg(cls.process.pid, signal.SIGKILL)
                cls.process = None
                too_slow(what)
            code = int(cls.process.stdout.readline())
            return subprocess.CompletedProcess(["python", "-c", "PARSE_ONLY", *args], code,
                                               out.read_text(), err.read_text())


def check(command: Command, cwd: Path) -> None:
    skipped = []
    for argv in python_parts(command.text):
        form = cheap_form(shlex.join(argv))
        if form and form[0] == "skip":
            skipped.append(form[1])
            continue
        args = argv[1:]
        parsed = ForkServer.parse(args, cwd, f"parsing `{command.text}`")
        marker = [line for line in parsed.stdout.splitlines() if line.startswith("PARSED ")]
        assert parsed.returncode == 0, (
            f"{command.document}:{command.line} `{command.text}` no longer parses:\n"
            f"{parsed.stderr[-2000:]}")
        if not marker:
            pytest.fail(f"`{command.text}` finished without an argparse parser reading its "
                        "arguments, so it cannot be checked cheaply: add a row to CHEAP_FORMS")
        options = set(json.loads(marker[0][len("PARSED "):]))
        if form and form[0] == "parse":
            continue
        if command.output:
            extra = []  # as written: the document shows what it prints
        elif form:
            extra = shlex.split(form[0])
        elif "--dry-run" in options:
            extra = ["--dry-run"]
        elif "--smoke-test" in options:
            extra = ["--smoke-test"]
        else:
            continue  # no cheap run exists: every option was read in the parse step
        done = run([*args, *extra], cwd, f"`{command.text}` with {extra or 'nothing'} added")
        shown = done.stdout + done.stderr
        failed_on_purpose = any(line.startswith("error:") for line in command.output)
        if failed_on_purpose:
            assert done.returncode == 2, shown[-2000:]
        else:
            assert done.returncode == 0, (
                f"{command.document}:{command.line} `{' '.join([*argv, *extra])}` failed:\n"
                f"{shown[-3000:]}")
        for line in command.output:
            assert line in shown, f"the document shows {line!r}; the command printed:\n{shown}"
    if skipped and len(skipped) == len(python_parts(command.text)):
        pytest.skip(skipped[0])


@pytest.mark.slow
@pytest.mark.parametrize("command", commands())
def test_documented_command_still_works(command, scratch):
    check(command, scratch[command.document])


def test_commands_are_collected_with_their_output_and_continuations(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("text `python -m not_in_a_block`\n```bash\n"
                   "python -m mia_ray.cell --dataset digits \\\n    --sparsity 0.5\n"
                   "ray up cluster.yaml\n```\n```\n$ python sweeps/x.py --bad\n"
                   "error: bad\n\n$ echo hi\n```\n")
    assert collect(doc) == [
        Command("doc.md", 3, "python -m mia_ray.cell --dataset digits --sparsity 0.5", ()),
        Command("doc.md", 8, "python sweeps/x.py --bad", ("error: bad",))]
    assert [p[:2] for p in python_parts("python3 -m venv .venv && . x && python a.py")] == [
        ["python3", "-m"], ["python", "a.py"]]


def test_every_documented_command_has_a_form():
    """Collection itself: the README's commands are found, and each has a known way to
    be checked (a pattern row or the default)."""
    found = [c for d in DOCUMENTS for c in collect(d)]
    texts = [c.text for c in found]
    assert any(t.startswith("python -m mia_ray.audit ") for t in texts)
    assert any(t.startswith("python sweeps/small_grid.py") for t in texts)
    errors = [c for c in found if c.output]
    assert errors and all(any(o.startswith("error:") for o in c.output) for c in errors)


def test_a_command_that_cannot_be_made_cheap_fails_asking_for_a_row(tmp_path):
    """A program without argparse runs in full in the parse step: the check refuses it."""
    (tmp_path / "plain.py").write_text("print('did all the work')\n")
    with pytest.raises(pytest.fail.Exception, match="add a row to CHEAP_FORMS"):
        check(Command("doc.md", 1, "python plain.py", ()), tmp_path)
    (tmp_path / "gone.py").write_text(
        "import argparse\np = argparse.ArgumentParser()\np.add_argument('--kept')\n"
        "p.parse_args()\n")
    with pytest.raises(AssertionError, match="no longer parses"):
        check(Command("doc.md", 1, "python gone.py --kept 1 --removed 2", ()), tmp_path)
