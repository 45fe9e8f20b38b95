"""``shipmap completion bash|zsh|fish``: generated from every command's parser, at no start-up cost."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from shipmap.connectors._cli import _COMMANDS, main

CLI = [sys.executable, "-c", "import sys; from shipmap.connectors._cli import main; sys.exit(main())"]


def script(shell: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["completion", shell]) == 0
    return capsys.readouterr().out


def bash_complete(script_path: Path, words: list[str]) -> list[str]:
    """What bash offers after ``words`` (the last one being completed), through the real completion function."""
    line = " ".join(words)
    program = (
        f"source {script_path}\n"
        f"COMP_WORDS=({' '.join(repr(word) for word in words)}); COMP_CWORD={len(words) - 1}\n"
        f'COMP_LINE="{line}"; COMP_POINT=${{#COMP_LINE}}\n'
        "_shtab_shipmap\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash")
def test_bash_completes_commands_options_and_choices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "shipmap.bash"
    path.write_text(script("bash", capsys))
    assert set(bash_complete(path, ["shipmap", ""])) >= set(_COMMANDS)  # every command, new ones included
    assert bash_complete(path, ["shipmap", "va"]) == ["validate"]
    assert "--summary-json" in bash_complete(path, ["shipmap", "run", "--su"])
    assert bash_complete(path, ["shipmap", "test", "--format", ""]) == ["text", "json", "junit"]
    assert bash_complete(path, ["shipmap", "completion", ""]) == ["bash", "zsh", "fish"]


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_name_every_command(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = script(shell, capsys)
    assert all(command in text for command in _COMMANDS)
    assert "--log-format" in text and "junit" in text
    checker = shutil.which(shell)
    if checker is not None:  # the script parses in the real shell, where one is installed
        syntax = ["zsh", "-n"] if shell == "zsh" else ["fish", "--no-execute"]
        done = subprocess.run([*syntax], input=text, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr


def test_completion_costs_nothing_at_start_up() -> None:
    # shtab and the other commands' modules load only for `shipmap completion`.
    probe = (
        "import sys; from shipmap.connectors._cli import main; main(['validate', 'shopify/order']);"
        "print(sorted(m for m in sys.modules if m == 'shtab' or m.startswith('shipmap.connectors._cli.')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    loaded = done.stdout.strip().splitlines()[-1]
    assert "shtab" not in loaded and "completion" not in loaded and "sandbox" not in loaded


def test_an_unknown_shell_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["completion", "tcsh"])
    assert stopped.value.code == 2
    assert "invalid choice: 'tcsh'" in capsys.readouterr().err
