import subprocess
import sys

from labkit import cli


def test_every_subcommand_has_help(capsys):
    parser = cli.build_parser()
    subs = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - test introspection
    assert {"doctor", "run", "exercises", "portfolio"} <= set(subs)
    for name in subs:
        out = subprocess.run([sys.executable, "-m", "labkit.cli", name, "--help"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "usage: labkit" in out.stdout


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "typical session" in capsys.readouterr().out
