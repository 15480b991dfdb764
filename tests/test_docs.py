"""Every command the README and docs/ show runs as written, or, where a test cannot run it, parses.

How a page marks its commands (all a page's writer needs to know):
- Commands are the lines of ```bash blocks (a trailing ``# comment`` is prose, ``&&`` joins two commands) and the
  ``$ `` lines of ```console blocks. The lines after a ``$ `` line are output the command must print (``...``
  stands for anything; an ``error:`` line means kit's user-error exit code 2). ```python blocks run as script files.
- A block runs by default, in page order, in a copy of one small trained demo folder (the block marked
  ``shared-run``, run once; a command it ran is not run again); kit's training commands get tiny settings
  appended (``TINY``), so a page can show the real commands.
- ``<!-- docs-check: parse-only (why) -->`` on the line before a block: its commands need the network, Kaggle
  credentials, a GPU, minutes or a shell of their own. They are parsed: a ``kit`` command by kit's own
  command-line parser (the command and each ``--flag`` exist) with its settings loaded as ``kit`` would load them;
  a ``make`` target must exist, its variables be the Makefile's and its settings load; ``pip install -e`` must name
  setup.cfg's extras; ``source`` the Makefile's venv. A python block must compile.
- Every command is parsed, whether it also runs or not.
"""

from __future__ import annotations

import configparser
import contextlib
import dataclasses
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import COMMAND_TIMEOUT_S

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted(p for p in (REPO / "docs").glob("*.md") if p.name != "ARCHITECTURE.md")]
MARKER = re.compile(r"^<!-- docs-check: (?P<mode>parse-only|shared-run)\b.*-->$")
FENCE = re.compile(r"^```(?P<lang>\w*)")
CHECKED = ("bash", "console", "python")
# The settings the other tests use for tiny runs (tests/test_paths.py): 32 px, one epoch of 3 steps, one writer.
TINY = ["model.image_size=32", "train.epochs=1", "train.steps_per_epoch=3", "train.verbose=2", "data.workers=1"]
TINY_COMMANDS = {"records", "train", "tune", "lr-find", "evaluate", "predict", "export"}
TINY_EXTRA = {"lr-find": ["--steps", "20"], "tune": ["tuner.max_trials=2"]}
# Words among the settings that some commands take for themselves (kit/cli: run_setting, runs_setting, export's format).
NOT_SETTINGS = ("run", "runs", "format")
# make targets that are one kit command (KIT_ARGS: comp=COMP model=MODEL, the settings, ARGS).
MAKE_KIT = {t: [t] for t in ("data", "records", "train", "tune", "evaluate", "predict", "submit", "audit", "export")}
MAKE_KIT |= {"lr-find": ["lr-find"], "runs": ["runs"], "kernel": ["kernel", "push"]}


@dataclasses.dataclass
class Block:
    page: Path
    line: int  # 1-based, the opening fence
    lang: str
    mode: str  # run | parse-only | shared-run
    text: str

    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


@dataclasses.dataclass
class Command:
    block: Block
    argv: list[str]
    expected: list[str]  # console output lines the command must print

    def where(self) -> str:
        return f"{self.block.where()} `{shlex.join(self.argv)}`"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page`` in the languages this test checks, with the marker on the line before each."""
    found, lines, i = [], page.read_text().splitlines(), 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        marker = MARKER.match(lines[i - 1].strip()) if i else None
        if fence["lang"] in CHECKED:
            text = "\n".join(lines[i + 1 : end])
            found.append(Block(page, i + 1, fence["lang"], marker["mode"] if marker else "run", text))
        i = end + 1
    return found


def commands(block: Block) -> list[Command]:
    """The commands of a bash or console block (``&&`` split, comments dropped, ``\\`` continued)."""
    found: list[Command] = []
    text = block.text.replace("\\\n", " ")
    for line in text.splitlines():
        if block.lang == "console" and not line.startswith("$ "):
            if found and line.strip():
                found[-1].expected.append(line.strip())
            continue
        words = shlex.split(line[2:] if block.lang == "console" else line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            found.append(Command(block, words[:cut], []))
            words = words[cut + 1 :]
    return found


# ------------------------------------------------------------------------------------------------ parsing


def makefile_facts() -> tuple[set[str], set[str], str]:
    """The Makefile's targets (.PHONY), its own variables (MAKE_VARS) and its venv folder."""
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    targets = set(re.search(r"^\.PHONY:(.*)$", text, re.M)[1].split())
    variables = set(re.search(r"^MAKE_VARS := (.*)$", text, re.M)[1].split())
    venv = re.search(r"^VENV \?= (\S+)$", text, re.M)[1]
    return targets, variables, venv


def setup_extras() -> set[str]:
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    return set(parser["options.extras_require"])


def parse_kit(argv: list[str], settings: bool = True) -> None:
    """Parse ``kit ARGV`` with kit's own command objects (unknown commands and flags fail as they would for a user),
    then (``settings``) load its settings words as the command would. ``--help`` and ``--version`` end the parse, as they do.

    Duck-typed (a group has ``get_command``): typer builds on click, or on its own copy of click in newer releases.
    """
    import typer.main

    from kit.cli import app
    from kit.settings import load_settings

    command, name, args, parent = typer.main.get_command(app), "kit", list(argv), None
    while hasattr(command, "get_command") and args and not args[0].startswith("-"):
        parent = command.context_class(command, info_name=name, parent=parent)
        name = args.pop(0)
        command = command.get_command(parent, name)
        assert command is not None, f"kit has no command {name!r}"
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            context = command.make_context(name, args, parent=parent)
    except Exception as done:  # --help and --version stop the parse with exit code 0, a mistake with another
        if type(done).__name__ == "Exit" and getattr(done, "exit_code", None) == 0:
            return
        raise
    assert not hasattr(command, "get_command"), f"`kit {shlex.join(argv)}` names no command"
    if not settings:
        return
    words = [w for w in context.params.get("settings") or [] if w.partition("=")[0] not in NOT_SETTINGS]
    load_settings(words)


def parse_make(argv: list[str], settings: bool = True) -> None:
    targets, variables, _venv = makefile_facts()
    names = [w for w in argv if "=" not in w]
    assert names and set(names) <= targets, f"not a make target: {sorted(set(names) - targets)}"
    given = dict(w.split("=", 1) for w in argv if "=" in w)
    upper = {k for k in given if k.isupper()}
    assert upper <= variables, f"not a Makefile variable: {sorted(upper - variables)}"
    settings_words = [f"{k}={v}" for k, v in given.items() if not k.isupper()]
    for name in names:
        if name in MAKE_KIT:
            selectors = [f"comp={given.get('COMP', 'demo')}", f"model={given.get('MODEL', 'resnet20')}"]
            tuner = [f"tuner.kind={given['TUNER']}"] if "TUNER" in given else []
            words = [*MAKE_KIT[name], *selectors, *tuner, *settings_words, *shlex.split(given.get("ARGS", ""))]
            parse_kit(words, settings)


def parse_command(command: Command) -> None:
    """Parse one command; its settings are loaded here only when it does not run (running loads them for real,
    after the commands before it made the files they name)."""
    program, *args = command.argv
    settings = command.block.mode == "parse-only"
    if program == "kit":
        parse_kit(args, settings)
    elif program == "make":
        parse_make(args, settings)
    elif program == "pip":
        assert args[:2] == ["install", "-e"] and len(args) == 3, "only `pip install -e SPEC` is checked"
        extras = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", args[2])
        assert extras, args[2]
        assert set((extras[1] or "").split(",")) - {""} <= setup_extras(), f"{args[2]}: not an extra of setup.cfg"
    elif program == "source":
        assert args == [f"{makefile_facts()[2]}/bin/activate"], "source the Makefile's venv"
    else:
        raise AssertionError(f"no rule to check `{program}`: add one to tests/test_docs.py")


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_command_on_the_page_parses(page: Path) -> None:
    """The cheap check of every command, run or not: kit's parser accepts it (and, if it is not run, its settings)."""
    from kit.errors import KitError

    for block in blocks(page):
        if block.lang == "python":
            compile(block.text, block.where(), "exec")
            continue
        for command in commands(block):
            try:
                parse_command(command)
            except (KitError, Exception) as exc:
                raise AssertionError(f"{command.where()}: {exc}") from exc


# ------------------------------------------------------------------------------------------------ running


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "KIT_OFFLINE": "1"}


def kit_argv(argv: list[str]) -> list[str]:
    """``kit ...`` as this test runs it: the same interpreter, tiny settings for data and training commands."""
    args = argv[1:]
    name = args[0] if args else ""
    extra = [*TINY, *TINY_EXTRA.get(name, [])] if name in TINY_COMMANDS else []
    return [sys.executable, "-m", "kit", *args, *extra]


def run(command: Command, cwd: Path) -> None:
    assert command.argv[0] == "kit", f"{command.where()}: only kit commands run here; mark the block parse-only"
    result = subprocess.run(
        kit_argv(command.argv), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )
    output = [line.strip() for line in (result.stdout + result.stderr).splitlines()]
    code = 2 if any(line.startswith("error:") for line in command.expected) else 0
    assert result.returncode == code, f"{command.where()}: exit {result.returncode}, not {code}\n{result.stderr[-3000:]}"
    for expected in command.expected:
        pattern = ".*".join(re.escape(part) for part in expected.split("..."))
        assert any(re.fullmatch(pattern, line) for line in output), f"{command.where()}: no line {expected!r}\n{output}"


def run_python(block: Block, cwd: Path) -> None:
    script = cwd / "doc_example.py"
    script.write_text(block.text + "\n")
    result = subprocess.run(
        [sys.executable, str(script)], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )
    assert result.returncode == 0, f"{block.where()}: exit {result.returncode}\n{result.stderr[-3000:]}"


def run_block(block: Block, cwd: Path, done: frozenset[tuple[str, ...]] = frozenset()) -> None:
    """Run the block's commands in ``cwd``, but not those in ``done`` (the shared run ran them in this folder)."""
    if block.lang == "python":
        run_python(block, cwd)
        return
    for command in commands(block):
        if tuple(command.argv) not in done:
            run(command, cwd)


def shared_block() -> Block:
    (block,) = [b for page in PAGES for b in blocks(page) if b.mode == "shared-run"]
    return block


@pytest.fixture(scope="session")
def shared_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one block marked shared-run (data, records, a tiny trained run, evaluate, predict), run once."""
    folder = tmp_path_factory.mktemp("docs-shared")
    run_block(shared_block(), folder)
    return folder


RUN_PAGES = [page for page in PAGES if any(b.mode != "parse-only" for b in blocks(page))]


@pytest.mark.slow
@pytest.mark.parametrize("page", RUN_PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_the_page_commands_run(page: Path, shared_run: Path, tmp_path: Path) -> None:
    """The page's runnable blocks in order, in a copy of the shared demo folder (a command the shared run ran
    there already is not run again)."""
    work = tmp_path / "work"
    shutil.copytree(shared_run, work, symlinks=True)
    done = frozenset(tuple(command.argv) for command in commands(shared_block()))
    for block in blocks(page):
        if block.mode == "run":
            run_block(block, work, done)


# ------------------------------------------------------------------------------------------------ the pages


def test_the_checker_reads_the_marks_of_a_page(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n<!-- docs-check: parse-only (needs Kaggle) -->\n```bash\nkit data comp=cifake  # a comment\n```\n"
        "```console\n$ kit train comp=demo train.epohs=3\nerror: ... train.epochs ...\n```\n"
        "```yaml\nkey: value\n```\n```bash\nmake predict && make submit\nkit train \\\n  comp=demo\n```\n"
    )
    found = blocks(page)
    assert [(b.lang, b.mode, b.line) for b in found] == [("bash", "parse-only", 3), ("console", "run", 6), ("bash", "run", 13)]
    assert [c.argv for c in commands(found[0])] == [["kit", "data", "comp=cifake"]]
    (typo,) = commands(found[1])
    assert typo.argv == ["kit", "train", "comp=demo", "train.epohs=3"] and typo.expected == ["error: ... train.epochs ..."]
    assert [c.argv for c in commands(found[2])] == [["make", "predict"], ["make", "submit"], ["kit", "train", "comp=demo"]]


@pytest.mark.parametrize(
    "argv",
    [
        ["kit", "train", "--resum"],  # a flag the command does not have
        ["kit", "trian", "comp=demo"],  # no such command
        ["kit", "config", "comp=demo", "train.epohs=3"],  # no such setting
        ["kit", "kernel", "build", "--predict"],  # a flag of another kernel command
        ["make", "trian"],
        ["make", "train", "EPOCHS=3"],
        ["make", "train", "train.epohs=3"],
        ["pip", "install", "-e", ".[gpu]"],
        ["source", "venv/bin/activate"],
        ["docker", "run", "kit"],
    ],
)
def test_the_parser_refuses_what_a_user_could_not_run(argv: list[str]) -> None:
    block = Block(REPO / "README.md", 1, "bash", "parse-only", shlex.join(argv))
    with pytest.raises(Exception):  # noqa: B017  (KitError, click's UsageError or an AssertionError: any refusal)
        parse_command(Command(block, argv, []))


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    for page in (REPO / "docs").glob("*.md"):
        assert f"(docs/{page.name})" in readme, page.name


def test_the_readme_is_a_front_door() -> None:
    """One or two screens: the two set-up commands, the venv to activate, why each dependency is there."""
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    setup = [c.argv for b in blocks(REPO / "README.md") if b.lang == "bash" for c in commands(b)][:2]
    assert setup == [["make", "demo"], ["make", "test"]]
    assert "source .venv/bin/activate" in readme
    table = readme.split("## Dependencies and why each is there", 1)[1].split("\n\n", 1)[0]
    named = {n.strip().lower() for row in table.splitlines()[2:] for n in re.split(r",| \(", row.split("|")[1])}
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    requirements = [*parser["options"]["install_requires"].splitlines(), *parser["options.extras_require"]["export"].splitlines()]
    packages = {re.split(r"[<>=!\[ ]", r.strip())[0].lower() for r in requirements if r.strip() and not r.strip().startswith("#")}
    assert packages and packages <= {n.strip() for n in named}, sorted(packages - named)
