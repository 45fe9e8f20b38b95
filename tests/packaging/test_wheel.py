"""The wheel a user installs: built from the sdist, installed into a fresh venv outside the source tree.

One wheel and one venv for the whole module (about ten seconds); every test then runs the installed
``shipmap`` from a directory outside the tree, with no PYTHONPATH, as a user would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).parents[2]
MAPPINGS = ROOT / "mappings"
PACKAGES = {"engine": "shipmap/engine", "connectors": "shipmap/connectors", "mappings": "shipmap/mappings"}
SOURCE_FILES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", *PACKAGES)
ORDER = ROOT / "tests" / "fixtures" / "real" / "shopify" / "order_rest_get_with_fulfillment.json"


@dataclass(frozen=True)
class Installed:
    wheel: Path
    sdist: Path
    venv: Path
    work: Path  # an empty directory outside the source tree, the commands' working directory

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    def shipmap(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / "shipmap"), *args],
            capture_output=True,
            text=True,
            cwd=self.work,
            env=user_env(),
            timeout=timeout,
        )


def user_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    return env


def pip(venv: Path, *args: str) -> None:
    # The project's pip drives the fresh venv (no pip inside it); dependencies come from pip's usual index.
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", *args],
        check=True,
        capture_output=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    # `python -m build` makes the sdist, then the wheel from the unpacked sdist: a file the sdist forgets
    # is missing from the wheel too.
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    pip(venv, str(wheel))
    work = base / "work"
    work.mkdir()
    yield Installed(wheel=wheel, sdist=sdist, venv=venv, work=work)


def shipped_files() -> set[str]:
    """What must ship: every file under the package folders (symlinked fixtures followed), not bytecode."""
    found = set()
    for folder, package in PACKAGES.items():
        for directory, subdirectories, files in os.walk(ROOT / folder, followlinks=True):
            subdirectories[:] = [d for d in subdirectories if d != "__pycache__"]
            relative = Path(directory).relative_to(ROOT / folder)
            found.update(
                f"{package}/{(relative / name).as_posix()}" for name in files if not name.endswith(".pyc")
            )
    return {name.replace("/./", "/") for name in found}


def test_the_wheel_holds_every_subpackage_and_data_file(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = {name for name in wheel.namelist() if not name.startswith("shipmap-")}
    expected = shipped_files()
    assert {
        "shipmap/connectors/_cli/__init__.py",
        "shipmap/engine/py.typed",
        "shipmap/connectors/py.typed",
    } <= names
    assert any(name.startswith("shipmap/mappings/shopify/") for name in names)
    assert names == expected


def test_version_and_help(installed: Installed) -> None:
    version = installed.shipmap("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout == f"shipmap {installed.wheel.name.split('-')[1]}\n"
    helped = installed.shipmap("--help")
    assert helped.returncode == 0
    assert "usage: shipmap" in helped.stdout and "preview" in helped.stdout


def test_preview_of_a_packaged_mapping(installed: Installed) -> None:
    previewed = installed.shipmap("preview", "shopify/order", str(ORDER), "--json")
    assert previewed.returncode == 0, previewed.stderr
    assert json.loads(previewed.stdout)["order"]["id"] == "450789469"


def test_the_installed_ready_mappings_pass_their_cases(installed: Installed) -> None:
    located = subprocess.run(
        [installed.python, "-c", "import shipmap.mappings as m; print(m.__path__[0])"],
        capture_output=True,
        text=True,
        cwd=installed.work,
        env=user_env(),
        check=True,
    )
    mappings = Path(located.stdout.strip())
    assert installed.venv in mappings.parents
    # Every ready mapping ships, with its cases (a new platform's folder included).
    shipped = sorted(str(p.relative_to(mappings)) for p in mappings.rglob("*.yaml"))
    assert shipped == sorted(str(p.relative_to(MAPPINGS)) for p in MAPPINGS.rglob("*.yaml"))
    tested = installed.shipmap("test", str(mappings))
    assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr
    summary = tested.stdout.strip().splitlines()[-1]
    assert summary == _repository_cases_summary(), summary


def test_the_installed_library_lists_the_ready_mappings_it_ships(installed: Installed) -> None:
    """``packaged_mapping_names()`` reads the installed package data, not this checkout: the same names, each
    loading by its name from the installed copy."""
    listed = subprocess.run(
        [
            installed.python,
            "-c",
            "import json; from shipmap.engine import load_mapping, packaged_mapping_names as names;"
            " print(json.dumps([(n, str(load_mapping(n).file)) for n in names()]))",
        ],
        capture_output=True,
        text=True,
        cwd=installed.work,
        env=user_env(),
        check=True,
    )
    pairs = json.loads(listed.stdout)
    expected = sorted(
        str(p.relative_to(MAPPINGS).with_suffix(""))
        for p in MAPPINGS.glob("*/*.yaml")
        if not p.name.endswith(".cases.yaml")
    )
    assert [name for name, _ in pairs] == expected
    assert all(Path(file).is_relative_to(installed.venv) for _, file in pairs), pairs


def _repository_cases_summary() -> str:
    """``shipmap test mappings/``'s last line in this checkout: the installed copy must pass the same cases."""
    tested = subprocess.run(
        [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()", "test", str(MAPPINGS)],
        capture_output=True,
        text=True,
        check=False,
    )
    return tested.stdout.strip().splitlines()[-1]


def test_sandbox_starts_and_stops(installed: Installed) -> None:
    server = subprocess.Popen(
        [str(installed.venv / "bin" / "shipmap"), "sandbox", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=installed.work,
        env=user_env(),
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{url}/_sandbox/stats", timeout=10).status_code == 200
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=30)
    assert server.returncode == 130, err  # Ctrl-C: `shipmap: interrupted`, as every command answers it
    assert err.rstrip().endswith("shipmap: interrupted") and "Traceback" not in err


def public_names(installed: Installed) -> dict[str, list[str]]:
    listed = subprocess.run(
        [
            installed.python,
            "-c",
            "import json, shipmap.engine as e, shipmap.connectors as c;"
            "print(json.dumps({'shipmap.engine': e.__all__, 'shipmap.connectors': c.__all__}))",
        ],
        capture_output=True,
        text=True,
        cwd=installed.work,
        env=user_env(),
        check=True,
    )
    names: dict[str, list[str]] = json.loads(listed.stdout)
    return names


def write_user_script(directory: Path, names: dict[str, list[str]]) -> Path:
    lines = [f"from {module} import {name}" for module, listed in names.items() for name in listed]
    every = ", ".join(name for listed in names.values() for name in listed)
    script = directory / "user_script.py"
    script.write_text("\n".join([*lines, f"EVERY: list[object] = [{every}]", "print(len(EVERY))", ""]))
    return script


def mypy_strict(installed: Installed, script: Path) -> subprocess.CompletedProcess[str]:
    # The project's mypy, pointed at the fresh venv's interpreter: it sees only what that venv installed.
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--python-executable",
            installed.python,
            "--cache-dir",
            str(script.parent / ".mypy_cache"),
            str(script),
        ],
        capture_output=True,
        text=True,
        cwd=script.parent,
        env=user_env(),
        timeout=300,
    )


def test_every_public_name_imports_and_type_checks(installed: Installed) -> None:
    names = public_names(installed)
    assert len(names["shipmap.engine"]) > 10 and "Sandbox" in names["shipmap.connectors"]
    script = write_user_script(installed.work, names)
    ran = subprocess.run(
        [installed.python, str(script)], capture_output=True, text=True, cwd=installed.work, env=user_env()
    )
    assert ran.returncode == 0, ran.stderr
    assert int(ran.stdout) == sum(len(listed) for listed in names.values())
    checked = mypy_strict(installed, script)
    assert checked.returncode == 0, checked.stdout
    assert "Success: no issues found" in checked.stdout


def test_the_readme_editable_install_gives_mypy_the_types(installed: Installed, tmp_path: Path) -> None:
    # The README's editable command on a clone outside the tree; it replaces the wheel in the same venv
    # (dependencies already there), so this test runs last in the module.
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in SOURCE_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, clone / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, clone / name)
    pip(installed.venv, "--no-deps", "-e", str(clone), "--config-settings", "editable_mode=strict")
    located = subprocess.run(
        [installed.python, "-c", "import shipmap.engine as e; print(e.__file__)"],
        capture_output=True,
        text=True,
        cwd=installed.work,
        env=user_env(),
        check=True,
    )
    assert Path(located.stdout.strip()).resolve() == (clone / "engine" / "__init__.py").resolve()
    script = write_user_script(tmp_path, public_names(installed))
    checked = mypy_strict(installed, script)
    assert checked.returncode == 0, checked.stdout


def test_ready_mapping_cases_read_only_files_that_ship() -> None:
    # A case source outside mappings/ (say ../../tests/fixtures/...) would be missing from the wheel; shipped
    # fixtures are reached through mappings/_fixtures/, links into tests/fixtures/.
    import yaml

    mappings = (ROOT / "mappings").absolute()
    outside = []
    for cases_file in sorted(mappings.rglob("*.cases.yaml")):
        for case in yaml.safe_load(cases_file.read_text(encoding="utf-8"))["cases"]:
            source = case.get("source")
            if not isinstance(source, str):
                continue  # an inline document
            if mappings not in Path(os.path.normpath(cases_file.parent / source)).parents:  # .., not links
                outside.append(f"{cases_file.relative_to(mappings)}: {source}")
    assert outside == [], "use ../_fixtures/... instead of:\n" + "\n".join(outside)
