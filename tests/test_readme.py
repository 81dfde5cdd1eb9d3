"""The README's examples run as written (issue 17: one of them never finished): every python block
and every rflens command of its bash blocks, in a folder holding the files they name.  The
default run checks that each is found and parses; ``-m slow`` (CI) runs them all."""

from __future__ import annotations

import ast
import shlex
import subprocess
import sys

import pytest
from readme import NOT_RUN, prepare, run, runnable, snippets
from trained import weights_file

from rflens.cli import build_parser


def test_every_snippet_is_found_and_parses_or_says_why_it_is_not_run():
    found = snippets()
    python = [s for s in found if s.kind == "python"]
    commands = [s for s in found if s.kind == "bash" and runnable(s) is None]
    assert len(python) >= 3 and len(commands) >= 6
    for s in python:
        ast.parse(s.code, f"README.md:{s.line}")
    parser = build_parser()
    for s in commands:
        argv = shlex.split(s.code)
        assert parser.parse_args(argv[1:]).command == argv[1], s.code  # argparse exits 2 on a broken one
    skipped = {runnable(s) for s in found} - {None}
    assert set(NOT_RUN.values()) <= skipped


def test_a_synopsis_is_not_run_and_a_command_is():
    assert runnable(next(s for s in snippets("```bash\nrflens table MODEL [--format json]\n```\n"))) is not None
    assert runnable(next(s for s in snippets("```bash\nrflens table vgg16  # the table\n```\n"))) is None


@pytest.mark.slow
def test_every_readme_snippet_runs(tmp_path):
    prepare(tmp_path)
    failed, not_here = [], []
    for s in snippets():
        if runnable(s) is not None:
            continue
        if "trained.py:" in s.code and weights_file() is None:
            not_here.append(s.code)  # MTCNN's weights come with facenet-pytorch (make setup)
            continue
        try:
            run(s, tmp_path)
        except subprocess.CalledProcessError as e:
            failed.append(f"README.md:{s.line} {s.title}\n{e.stderr[-2000:]}")
    assert not failed, "\n\n".join(failed)
    if not_here:
        pytest.skip(f"ran all but {len(not_here)} commands that need facenet-pytorch's weights (make setup)")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-m", "slow"]))
