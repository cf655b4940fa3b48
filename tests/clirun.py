"""The command line run in-process, as tests call it."""

from __future__ import annotations

from testbed import cli


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``sapo-testbed ARGV``."""
    try:
        cli.main(argv)
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
