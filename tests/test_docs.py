"""The README's and docs/ pages' commands run as written, and their links lead somewhere.

Every command in a ```sh block is checked for what it names: `stsr` commands (also under
torchrun, mpiexec or srun) parse with stsr's own parser, and the README's protocol runs for
real on the shipped tornado; `make` targets exist and the ARGS they pass parse with the
target's own parser; Python modules and scripts exist and take the options shown. The
command synopses list only options the commands have. Relative links point at files and
headings that exist."""
import argparse
import importlib
import os
import re
import shlex
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from stsr_core import cli
from stsr_core.io import write_series
from stsr_run import main_here
from test_engine import smooth_series

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# programs a page may show that these tests do not check (not installed here, or a shell's)
UNCHECKED = {"cmake", "ctest", "export", "paraview", "scontrol"}
# the make targets whose ARGS go to a Python module's command line
MAKE_MODULES = {"bench": "bench.run", "bench-quick": "bench.run", "bench-scale": "bench.scale",
                "bench-learning": "bench.learning", "train-prior": "bench.train_space_prior"}


def blocks(page: Path, language: str = "sh") -> Iterator[Tuple[int, List[str]]]:
    """(first line number, lines) of each fenced block in ``language`` ('' for none)."""
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if m:
            start, body = i + 1, []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            if m.group(1) == language:
                yield start + 1, body
        i += 1


def commands(page: Path) -> List[Tuple[str, str]]:
    """(where, command) for each command of the page's sh blocks: continuation lines joined,
    comments dropped."""
    out = []
    for line_no, body in blocks(page):
        text = "\n".join(body).replace("\\\n", " ")
        for k, line in enumerate(text.splitlines()):
            words = shlex.split(line, comments=True)
            if words:
                out.append((f"{page.name}:{line_no + k}", " ".join(shlex.quote(w)
                                                                 for w in words)))
    return out


ALL = [c for page in PAGES for c in commands(page)]


class Parsed(Exception):
    """A command's parser accepted its arguments (raised to stop before any work)."""


def parses_with_its_own_parser(main, args: List[str]) -> None:
    """``main(args)`` of an argparse program: its parser accepts ``args`` (it would exit
    with status 2 otherwise); nothing after the parsing runs."""
    original = argparse.ArgumentParser.parse_args

    def parse(self, a=None, namespace=None):
        original(self, a, namespace)
        raise Parsed
    argparse.ArgumentParser.parse_args = parse
    try:
        with pytest.raises(Parsed):
            main(args)
    finally:
        argparse.ArgumentParser.parse_args = original


def check_stsr(args: List[str]) -> None:
    try:
        cli.build_parser().parse_args(args)
    except SystemExit as exc:
        raise AssertionError(f"stsr {' '.join(args)}: not a valid command line") from exc


def check_module(module: str, args: List[str]) -> None:
    main = importlib.import_module(module if module != "bench.scale" else
                                   "bench.scale.__main__").main
    parses_with_its_own_parser(main, args)


def check_script(script: str, args: List[str]) -> None:
    """A script run under pvpython or pvbatch (which this venv cannot import): it exists
    and names every option shown."""
    path = ROOT / script
    assert path.is_file(), f"{script} does not exist"
    text = path.read_text()
    for a in args:
        if a.startswith("--"):
            assert f'"{a.split("=")[0]}"' in text, f"{script} has no option {a}"


def check(words: List[str]) -> None:
    """What ``words`` (a command as a page shows it) names exists and accepts it."""
    while words and re.match(r"^[A-Z_]+=", words[0]):          # VAR=value cmd ...
        words = words[1:]
    prog, args = words[0], words[1:]
    name = os.path.basename(prog)
    if name == "stsr":
        return check_stsr(args)
    if name == "make":
        targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M)
        assert args and args[0] in targets, f"make has no target {args[:1]}"
        extra = [a.split("=", 1)[1] for a in args[1:] if a.startswith("ARGS=")]
        if args[0] in MAKE_MODULES and extra:
            check_module(MAKE_MODULES[args[0]], shlex.split(extra[0]))
        return None
    if name in ("torchrun", "mpiexec", "srun", "xvfb-run", "stsr-paraview"):
        # the launcher's own options, then the program it starts
        i = 0
        while i < len(args) and args[i].startswith("-") and args[i] != "-m":
            takes_value = args[i] in ("-n", "-x", "--nproc-per-node", "--ntasks-per-node",
                                      "-s")
            i += 2 if takes_value else 1
        rest = args[i:]
        if name == "torchrun":
            assert rest[:2] == ["-m", "stsr_core.cli"] or rest[:1] == ["-m"], rest
            return check_stsr(rest[2:]) if rest[1] == "stsr_core.cli" else \
                check_module(rest[1], rest[2:])
        if name == "stsr-paraview" and not rest:
            return None                                   # the GUI with the plugin
        if name == "stsr-paraview" and rest[0] in ("pvpython", "pvbatch", "paraview"):
            rest = [a for a in rest[1:] if a != "--sym"]
            return check_script(rest[0], rest[1:]) if rest else None
        return check(rest)
    if name in ("pvpython", "pvbatch"):
        return check_script(args[0], args[1:])
    if name.startswith("python"):
        if args[:1] == ["-m"]:
            return check_module(args[1], args[2:])
        assert (ROOT / args[0]).is_file(), f"{args[0]} does not exist"
        return None
    assert name in UNCHECKED, f"{' '.join(words)}: no check for {prog} (add one)"
    return None


@pytest.mark.parametrize("where, command", ALL, ids=[w for w, _ in ALL])
def test_each_command_shown_names_what_exists_and_parses(where, command):
    check(shlex.split(command))


def test_the_pages_show_commands_at_all():
    """The extraction works: the README's protocol and the cluster page's launchers."""
    shown = " ".join(c for _, c in ALL)
    for text in ("stsr fit coarse.pvd -o tornado.stsr", "make test", "torchrun", "mpiexec",
                 "srun", "make bench-scale ARGS=--quick"):
        assert text in shown, text


def test_the_synopses_list_only_options_the_commands_have():
    parser = cli.build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    seen = 0
    for _, body in blocks(ROOT / "docs" / "command-line.md", language=""):
        command = None
        for line in body:
            m = re.match(r"^stsr ([\w-]+)", line)
            command = m.group(1) if m else command
            if command is None:
                continue
            known = subs.choices[command]._option_string_actions
            for option in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", line):
                assert option in known, f"stsr {command} has no option {option}"
                seen += 1
    assert seen > 20


def test_the_readme_protocol_runs_as_written(tmp_path):
    """The README's command-line example, every command and option as it is, through stsr's
    own main (the `stsr` command's parser and code), on a tiny series in the tornado's place
    (the tornado's 2-minute fit is the demo's, make demo)."""
    tornado = tmp_path / "examples" / "data" / "tornado" / "tornado.pvd"
    tornado.parent.mkdir(parents=True)
    write_series(smooth_series(nx=9, ny=9, nz=9, nt=9), str(tornado))
    block = next(body for _, body in blocks(ROOT / "README.md")
                 if any(line.startswith("stsr coarsen") for line in body))
    for line in block:
        words = shlex.split(line, comments=True)
        assert words[0] == "stsr", line
        code, out, err = main_here(*words[1:], cwd=tmp_path)
        assert code == 0, f"{line}\n{out}{err}"
    assert "temperature" in out                          # stsr info lists the variables


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(page):
    text = page.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue                                     # http:, https:, mailto:
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: {target} does not exist"
        if anchor and dest.suffix == ".md":
            headings = re.findall(r"^#+ (.*)$", dest.read_text(), re.M)
            assert anchor in {slug(h) for h in headings}, f"{page.name}: no heading #{anchor}"
