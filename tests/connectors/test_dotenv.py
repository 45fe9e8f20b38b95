"""The ``.env`` beside a run config, read as python-dotenv defines the format."""

from __future__ import annotations

from pathlib import Path

import pytest
from shipmap.connectors import ConfigError, load_config
from test_config import MINIMAL, write


def credentials(tmp_path: Path, dotenv: str, environ: dict[str, str] | None = None) -> tuple[str, str, str]:
    path = write(tmp_path, MINIMAL)
    (tmp_path / ".env").write_text(dotenv, encoding="utf-8")
    auth = load_config(path, environ=environ or {}).connections[0].auth
    return auth.username, auth.password, auth.api_key


def test_quotes_and_comments(tmp_path: Path) -> None:
    # The hand-written reader kept the quotes of a quoted value followed by a comment.
    dotenv = (
        "FENIX_USERNAME='quoted'  # a comment\nFENIX_PASSWORD=\"p#ss\" # after\nFENIX_API_KEY=plain # c\n"
    )
    assert credentials(tmp_path, dotenv) == ("quoted", "p#ss", "plain")


def test_escapes_in_double_quotes_only(tmp_path: Path) -> None:
    dotenv = 'FENIX_USERNAME="a\\tb\\"c"\nFENIX_PASSWORD=\'raw\\n\'\nFENIX_API_KEY="key\\\\y"\n'
    assert credentials(tmp_path, dotenv) == ('a\tb"c', "raw\\n", "key\\y")


def test_multi_line_values(tmp_path: Path) -> None:
    from shipmap.connectors._config import _read_dotenv

    dotenv = 'FENIX_USERNAME=u\nFENIX_PASSWORD="-----BEGIN KEY-----\nline two\n-----END KEY-----"\nFENIX_API_KEY=key1\n'
    (tmp_path / ".env").write_text(dotenv, encoding="utf-8")
    assert (
        _read_dotenv(tmp_path / ".env", {})["FENIX_PASSWORD"]
        == "-----BEGIN KEY-----\nline two\n-----END KEY-----"
    )
    # Read whole, but a line break cannot go in the Fenix password header: refused at load, by name (issue 13).
    with pytest.raises(ConfigError, match=r"from \$\{FENIX_PASSWORD\}.*cannot be sent in an HTTP header"):
        credentials(tmp_path, dotenv)


def test_variable_expansion_with_defaults_and_the_environment_winning(tmp_path: Path) -> None:
    dotenv = (
        "BASE=acme\n"
        "FENIX_USERNAME=${BASE}-user\n"
        "FENIX_PASSWORD=${SECRET_FROM_ENV}\n"
        "FENIX_API_KEY=${UNSET:-fallback}-${BASE}\n"
    )
    found = credentials(tmp_path, dotenv, {"SECRET_FROM_ENV": "from-environ", "BASE": "env-base"})
    assert found == ("env-base-user", "from-environ", "fallback-env-base")


def test_export_prefix_and_blank_lines(tmp_path: Path) -> None:
    dotenv = "\n# demo\nexport FENIX_USERNAME=u\n\nexport FENIX_PASSWORD=pass\nFENIX_API_KEY=key1\n"
    assert credentials(tmp_path, dotenv) == ("u", "pass", "key1")


def test_a_line_that_is_not_key_value_is_located_without_its_text(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    (tmp_path / ".env").write_text("FENIX_USERNAME=u\nthis is s3cr3t garbage\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.location is not None and caught.value.location.line == 2
    assert "s3cr3t" not in caught.value.render()
