"""Rules that span two keys of one section. Bounds: a fenix_session's ``refresh_margin`` below its
``token_ttl``, a backoff base, a breaker cooldown and ``serve.resweep`` at most their caps,
``serve.keep_bodies`` at most ``dedup_window``; each key passed its own bounds and the pair was not checked: a
margin of 5m on a 4m token was silently halved. And keys that one auth scheme alone reads (``login_path``,
``token_ttl``, ``refresh_margin`` with fenix_session; ``header``, ``prefix`` with api_key), ignored in silence
under another. Held for a file (located at the key written later, or at the key ignored; exit 2), by the
schema that an editor reads too, and for a record built in code when it is built (naming its class); a key
left out is None, adapts or takes its scheme's default, and is not an error."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from shipmap.connectors import (
    AuthSettings,
    BreakerSettings,
    ConfigError,
    DeliverySettings,
    RetryPolicy,
    Runtime,
    config_schema,
    load_config,
)
from shipmap.connectors._cli import main
from shipmap.connectors._redact import Redactor
from shipmap.connectors._serve import ServeSettings
from test_runtime_support import BASE_CONFIG, SECRETS, environ, write_config

URL = "http://127.0.0.1:9"
DAY = 86400.0
FENIX_SESSION = {"scheme": "fenix_session", "username": "u", "password": "pass", "api_key": "key1"}


def _fenix_auth(**keys: str) -> dict[str, Any]:
    connections = copy.deepcopy(BASE_CONFIG["connections"])
    connections["fenix"]["auth"].update(keys)
    return {"connections": connections}


def _fenix_breaker(**keys: str) -> dict[str, Any]:
    connections = copy.deepcopy(BASE_CONFIG["connections"])
    connections["fenix"]["breaker"] = keys
    return {"connections": connections}


@pytest.mark.parametrize(
    ("changes", "located", "message"),
    [
        (
            _fenix_auth(token_ttl="4m", refresh_margin="5m"),
            "refresh_margin: 5m",
            "connections.fenix.auth.refresh_margin: must be less than token_ttl (4m): the token would be"
            " renewed before every request, or never used",
        ),
        (  # written the other way round: the error is at the key that came later, token_ttl
            _fenix_auth(refresh_margin="10m", token_ttl="10m"),
            "token_ttl: 10m",
            "connections.fenix.auth.token_ttl: must be more than refresh_margin (10m): the token would be"
            " renewed before every request, or never used",
        ),
        (  # against the default token_ttl (4h)
            _fenix_auth(refresh_margin="5h"),
            "refresh_margin: 5h",
            "connections.fenix.auth.refresh_margin: must be less than token_ttl (4h, its default): the token"
            " would be renewed before every request, or never used",
        ),
        (
            {"delivery": {"retry": {"backoff_base": "2s", "backoff_cap": "1s"}}},
            "backoff_cap: 1s",
            "delivery.retry.backoff_cap: must be at least backoff_base (2s): the cap would lower every backoff"
            " to itself",
        ),
        (
            _fenix_breaker(cooldown="90s"),
            "cooldown: 90s",
            "connections.fenix.breaker.cooldown: must be at most cooldown_cap (1m, its default): the first wait"
            " between probes would be longer than the cap",
        ),
        (
            {"serve": {"resweep_cap": "1m", "resweep": "2m"}},
            "resweep: 2m",
            "serve.resweep: must be at most resweep_cap (1m): the first wait for parked work would be longer"
            " than the longest",
        ),
        (  # the cap written later: the error is there
            {"serve": {"resweep": "10m", "resweep_cap": "5m"}},
            "resweep_cap: 5m",
            "serve.resweep_cap: must be at least resweep (10m): the first wait for parked work would be longer"
            " than the longest",
        ),
        (
            {"serve": {"resweep": "10m"}},
            "resweep: 10m",
            "serve.resweep: must be at most resweep_cap (5m, its default): the first wait for parked work would"
            " be longer than the longest",
        ),
        (  # bodies kept longer than the ids: the default window (7d)
            {"serve": {"keep_bodies": "8d"}},
            "keep_bodies: 8d",
            "serve.keep_bodies: must be at most dedup_window (7d, its default): the inbox forgets a webhook, its"
            " id and its body, that long after it arrived",
        ),
        (
            {"serve": {"dedup_window": "2d", "keep_bodies": "3d"}},
            "keep_bodies: 3d",
            "serve.keep_bodies: must be at most dedup_window (2d): the inbox forgets a webhook, its id and its"
            " body, that long after it arrived",
        ),
        (  # the window written later: the error is there
            {"serve": {"keep_bodies": "3d", "dedup_window": "2d"}},
            "dedup_window: 2d",
            "serve.dedup_window: must be at least keep_bodies (3d): the inbox forgets a webhook, its id and its"
            " body, that long after it arrived",
        ),
    ],
    ids=[
        "margin-after-ttl",
        "ttl-after-margin",
        "margin-over-default-ttl",
        "backoff",
        "connection-cooldown",
        "resweep",
        "resweep-cap-after",
        "resweep-over-default-cap",
        "keep_bodies-over-default-window",
        "keep_bodies-over-window",
        "window-after-keep_bodies",
    ],
)
def test_two_keys_out_of_order_are_a_located_error_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: dict[str, Any], located: str, message: str
) -> None:
    path = write_config(tmp_path, URL, **changes)
    lines = path.read_text().splitlines()
    line = next(n for n, row in enumerate(lines, 1) if row.strip() == located)
    column = lines[line - 1].index(located) + len(located.split(": ")[0]) + 3
    _refused_at(path, line, column, message, capsys)


def _dg_auth(**auth: str) -> dict[str, Any]:
    connections = copy.deepcopy(BASE_CONFIG["connections"])
    connections["dg"]["auth"] = auth
    return {"connections": connections}


NO_TOKEN = "no other scheme logs in for a token to renew"
NO_EXPIRY = "no other scheme logs in for a token that expires"
NO_LOGIN = "no other scheme logs in"
NO_HEADER = "no other scheme sends its credentials in a header named here"
NO_PREFIX = "no other scheme writes text before its credentials"


def _only(value: str, scheme: str, why: str) -> str:
    """What is said of a key that the scheme ``value`` alone reads, given under ``scheme``."""
    return f"applies only to {value} auth, and the scheme is {scheme}: {why}"


@pytest.mark.parametrize(
    ("changes", "key", "message"),
    [
        (
            _dg_auth(scheme="basic", key="${DG_API_KEY}", secret="${DG_API_SECRET}", refresh_margin="5m"),
            "refresh_margin",
            "connections.dg.auth.refresh_margin: applies only to fenix_session auth, and the scheme is basic: no"
            " other scheme logs in for a token to renew",
        ),
        (  # written before the scheme: the key is what is wrong, wherever it stands
            _dg_auth(refresh_margin="30s", scheme="api_key", api_key="${DG_API_KEY}"),
            "refresh_margin",
            "connections.dg.auth.refresh_margin: " + _only("fenix_session", "api_key", NO_TOKEN),
        ),
        (
            _dg_auth(scheme="bearer", token="${DG_API_KEY}", refresh_margin="0s"),
            "refresh_margin",
            "connections.dg.auth.refresh_margin: " + _only("fenix_session", "bearer", NO_TOKEN),
        ),
        (
            _dg_auth(scheme="none", refresh_margin="5m"),
            "refresh_margin",
            "connections.dg.auth.refresh_margin: " + _only("fenix_session", "none", NO_TOKEN),
        ),
        (  # at its default: given is given
            _dg_auth(scheme="basic", key="${DG_API_KEY}", secret="${DG_API_SECRET}", token_ttl="4h"),
            "token_ttl",
            "connections.dg.auth.token_ttl: " + _only("fenix_session", "basic", NO_EXPIRY),
        ),
        (
            _dg_auth(scheme="api_key", api_key="${DG_API_KEY}", login_path="/login"),
            "login_path",
            "connections.dg.auth.login_path: " + _only("fenix_session", "api_key", NO_LOGIN),
        ),
        (  # the session sends x-api-key, but under a name of its own: not this key's
            _fenix_auth(header="X-Key"),
            "header",
            "connections.fenix.auth.header: " + _only("api_key", "fenix_session", NO_HEADER),
        ),
        (
            _dg_auth(scheme="bearer", token="${DG_API_KEY}", prefix="Token"),
            "prefix",
            "connections.dg.auth.prefix: " + _only("api_key", "bearer", NO_PREFIX),
        ),
        (  # two ignored keys: the first written is told
            _dg_auth(scheme="none", header="x-api-key", login_path="/login"),
            "header",
            "connections.dg.auth.header: " + _only("api_key", "none", NO_HEADER),
        ),
    ],
    ids=[
        "margin-basic",
        "margin-api_key-written-first",
        "margin-bearer-zero",
        "margin-none",
        "ttl-basic-at-default",
        "login_path-api_key",
        "header-fenix_session",
        "prefix-bearer",
        "two-keys-none",
    ],
)
def test_a_key_another_scheme_alone_reads_is_a_located_error_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: dict[str, Any], key: str, message: str
) -> None:
    """They were ignored in silence: the author believed the token renewed early, or the key went in that
    header. Located at the key itself (as an unknown key is), never quoting a value; from the schema, which
    an editor reads too."""
    path = write_config(tmp_path, URL, **changes)
    lines = path.read_text().splitlines()
    line = next(n for n, row in enumerate(lines, 1) if row.strip().startswith(f"{key}:"))
    column = lines[line - 1].index(key) + 1
    _refused_at(path, line, column, message, capsys)
    assert main(["validate", str(path)]) == 2
    assert f"{path}:{line}:{column}: error: {message}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: AuthSettings(scheme="basic", username="u", password="pass", refresh_margin=300.0),
            "AuthSettings: refresh_margin " + _only("fenix_session", "basic", NO_TOKEN),
        ),
        (  # the scheme left out is none
            lambda: AuthSettings(refresh_margin=60.0),
            "AuthSettings: refresh_margin " + _only("fenix_session", "none", NO_TOKEN),
        ),
        (  # a session's settings turned into another scheme's by dataclasses.replace keep the margin: refused
            lambda: dataclasses.replace(
                AuthSettings(**FENIX_SESSION, store_name="s", refresh_margin=60.0),
                scheme="bearer",
                token="tok1",
            ),
            "AuthSettings: refresh_margin " + _only("fenix_session", "bearer", NO_TOKEN),
        ),
        (  # equal to its default, given all the same: told from left out, as in a file
            lambda: AuthSettings(scheme="basic", username="u", password="pass", header="x-api-key"),
            "AuthSettings: header " + _only("api_key", "basic", NO_HEADER),
        ),
        (
            lambda: AuthSettings(**FENIX_SESSION, store_name="s", prefix="Key"),
            "AuthSettings: prefix " + _only("api_key", "fenix_session", NO_PREFIX),
        ),
        (
            lambda: AuthSettings(scheme="api_key", api_key="key1", token_ttl=600.0),
            "AuthSettings: token_ttl " + _only("fenix_session", "api_key", NO_EXPIRY),
        ),
        (
            lambda: AuthSettings(login_path="/auth"),
            "AuthSettings: login_path " + _only("fenix_session", "none", NO_LOGIN),
        ),
        (
            lambda: dataclasses.replace(
                AuthSettings(scheme="api_key", api_key="key1", header="X-Key"), scheme="bearer", token="tok1"
            ),
            "AuthSettings: header " + _only("api_key", "bearer", NO_HEADER),
        ),
    ],
    ids=[
        "margin-basic-equal-to-default",
        "margin-none-by-default",
        "margin-bearer-by-replace",
        "header-basic-equal-to-default",
        "prefix-fenix_session",
        "ttl-api_key",
        "login_path-none",
        "header-bearer-by-replace",
    ],
)
def test_a_key_another_scheme_alone_reads_is_refused_when_built_in_code(build: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build()
    assert (caught.value.message, caught.value.location, caught.value.exit_code) == (message, None, 2)


def test_other_schemes_without_those_keys_and_their_own_schemes_with_them_pass() -> None:
    assert AuthSettings(scheme="basic", username="u", password="pass").refresh_margin is None
    session = AuthSettings(**FENIX_SESSION, store_name="s", refresh_margin=60.0, login_path="/auth")
    assert (
        dataclasses.replace(session, refresh_margin=None, login_path=None, scheme="api_key").scheme
        == "api_key"
    )
    keyed = AuthSettings(scheme="api_key", api_key="key1", header="X-Key", prefix="")
    assert dataclasses.replace(keyed, header=None, prefix=None, scheme="bearer", token="tok1").header is None


def _sent(auth: httpx.Auth) -> httpx.Headers:
    """The headers ``auth`` puts on a request (no login: the schemes of fixed headers)."""
    return next(auth.sync_auth_flow(httpx.Request("GET", f"{URL}/orders"))).headers


def test_keys_left_out_are_none_and_run_with_their_scheme_defaults() -> None:
    """None tells left out from given (even at the default); ``in_use`` gives what runs, the one place a built
    auth reads them."""
    keyed = AuthSettings(scheme="api_key", api_key="key1")
    assert (keyed.header, keyed.prefix) == (None, None)
    assert (keyed.in_use("header"), keyed.in_use("prefix")) == ("x-api-key", "")
    assert _sent(keyed.build(URL, Redactor()))["x-api-key"] == "key1"
    named = AuthSettings(scheme="api_key", api_key="key1", header="X-Key", prefix="Key")
    assert (named.in_use("header"), named.in_use("prefix")) == ("X-Key", "Key")
    sent = _sent(named.build(URL, Redactor()))
    assert (sent["X-Key"], "x-api-key" in sent) == ("Key key1", False)
    session = AuthSettings(**FENIX_SESSION, store_name="s")
    assert (session.login_path, session.token_ttl) == (None, None)
    built: Any = session.build(f"{URL}/base", Redactor())
    assert (built.login_url, built.token_ttl, built.refresh_margin) == (
        f"{URL}/base/login",
        4 * 3600.0,
        300.0,
    )
    given: Any = AuthSettings(**FENIX_SESSION, store_name="s", login_path="/auth", token_ttl=600.0).build(
        URL, Redactor()
    )
    assert (given.login_url, given.token_ttl, given.refresh_margin) == (f"{URL}/auth", 600.0, 300.0)


def _schema_errors(auth: dict[str, Any]) -> list[jsonschema.ValidationError]:
    """What a plain JSON Schema validator (an editor's) finds in a config whose one connection has ``auth``."""
    document = {
        "connections": {"shop": {"api": "generic", "base_url": URL, "auth": auth}},
        "mappings": [{"mapping": "orders.yaml"}],
    }
    schema = config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return list(jsonschema.Draft202012Validator(schema).iter_errors(document))


@pytest.mark.parametrize(
    "auth",
    [
        {"scheme": "api_key", "api_key": "key1", "header": "X-Key", "prefix": "Key"},
        {
            **FENIX_SESSION,
            "store_name": "s",
            "login_path": "/auth",
            "token_ttl": "30m",
            "refresh_margin": "1m",
        },
        {"scheme": "basic", "key": "k1", "secret": "s123"},
    ],
    ids=["api_key", "fenix_session", "basic"],
)
def test_the_schema_accepts_each_schemes_own_keys(auth: dict[str, Any]) -> None:
    assert _schema_errors(auth) == []


@pytest.mark.parametrize(
    ("auth", "key", "message"),
    [
        (
            {"scheme": "basic", "key": "k1", "secret": "s123", "refresh_margin": "5m"},
            "refresh_margin",
            _only("fenix_session", "basic", NO_TOKEN),
        ),
        (
            {"scheme": "api_key", "api_key": "key1", "token_ttl": "4h"},
            "token_ttl",
            _only("fenix_session", "api_key", NO_EXPIRY),
        ),
        (
            {"scheme": "none", "login_path": "/login"},
            "login_path",
            _only("fenix_session", "none", NO_LOGIN),
        ),
        (
            {**FENIX_SESSION, "store_name": "s", "header": "x-api-key"},
            "header",
            _only("api_key", "fenix_session", NO_HEADER),
        ),
        (
            {"scheme": "bearer", "token": "tok1", "prefix": "Bearer"},
            "prefix",
            _only("api_key", "bearer", NO_PREFIX),
        ),
    ],
    ids=["margin-basic", "ttl-api_key", "login_path-none", "header-fenix_session", "prefix-bearer"],
)
def test_the_schema_flags_a_key_its_scheme_ignores_at_that_key(
    auth: dict[str, Any], key: str, message: str
) -> None:
    """For an editor, from the schema alone (``if``/``then`` per scheme): the one error is at the key, and the
    schema's x-error is what shipmap says there."""
    errors = _schema_errors(auth)
    assert [(list(e.absolute_path), e.validator, e.schema.get("x-error")) for e in errors] == [
        (["connections", "shop", "auth", key], "not", message)
    ]


def test_only_the_margin_changed_is_told_without_building_a_record_that_breaks_the_pair() -> None:
    """A reload from a 4h token with a 1h margin to a 30m token, its margin left out, is a new session: the
    check built the new settings with the old margin, which broke their pair and raised ConfigError from
    inside the reload. From a session to another scheme, likewise."""
    long = AuthSettings(**FENIX_SESSION, store_name="s", token_ttl=4 * 3600.0, refresh_margin=3600.0)
    short = dataclasses.replace(long, token_ttl=1800.0, refresh_margin=None)
    basic = AuthSettings(scheme="basic", username="u", password="pass")
    assert (long.differs_in_margin_alone(short), long.differs_in_margin_alone(basic)) == (False, False)
    assert long.differs_in_margin_alone(dataclasses.replace(long, refresh_margin=None)) is True
    assert long.differs_in_margin_alone(long) is False


def test_a_short_token_ttl_alone_keeps_the_default_margin_adapting(tmp_path: Path) -> None:
    """The default margin (5m) is at most half the token's life: a 2m token alone is not an error."""
    config = load_config(write_config(tmp_path, URL, **_fenix_auth(token_ttl="2m")), environ=environ(URL))
    fenix = next(c for c in config.connections if c.name == "fenix")
    assert (fenix.auth.token_ttl, fenix.auth.refresh_margin) == (120.0, None)  # left out
    auth = fenix.auth.build(fenix.base_url, Redactor())
    assert auth.refresh_margin == 60.0  # type: ignore[attr-defined]


def _in_code(**changes: Any) -> Any:
    from test_config import _in_code as build

    return build(**changes)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: AuthSettings(**FENIX_SESSION, token_ttl=240.0, refresh_margin=360.0),
            "AuthSettings: refresh_margin (6m) must be less than token_ttl (4m): the token would be renewed"
            " before every request, or never used",
        ),
        (  # the lower key given equal to its default (5m): given all the same, as in a file
            lambda: AuthSettings(**FENIX_SESSION, token_ttl=240.0, refresh_margin=300.0),
            "AuthSettings: refresh_margin (5m) must be less than token_ttl (4m): the token would be renewed"
            " before every request, or never used",
        ),
        (
            lambda: RetryPolicy(backoff_base=2.0, backoff_cap=1.0),
            "RetryPolicy: backoff_base (2s) must be at most backoff_cap (1s): the cap would lower every backoff"
            " to itself",
        ),
        (
            lambda: RetryPolicy(backoff_base=0.5, backoff_cap=0.25),
            "RetryPolicy: backoff_base (500ms) must be at most backoff_cap (250ms): the cap would lower every"
            " backoff to itself",
        ),
        (  # by dataclasses.replace too: a left-out base, given later
            lambda: dataclasses.replace(RetryPolicy(backoff_cap=0.25), backoff_base=0.5),
            "RetryPolicy: backoff_base (500ms) must be at most backoff_cap (250ms): the cap would lower every"
            " backoff to itself",
        ),
        (
            lambda: BreakerSettings(cooldown=5.0, cooldown_cap=2.0),
            "BreakerSettings: cooldown (5s) must be at most cooldown_cap (2s): the first wait between probes"
            " would be longer than the cap",
        ),
        (
            lambda: BreakerSettings(cooldown=1.0, cooldown_cap=0.5),
            "BreakerSettings: cooldown (1s) must be at most cooldown_cap (500ms): the first wait between probes"
            " would be longer than the cap",
        ),
        (
            lambda: ServeSettings(inbox="i", sources={}, resweep=5.0, resweep_cap=2.0),
            "ServeSettings: resweep (5s) must be at most resweep_cap (2s): the first wait for parked work would"
            " be longer than the longest",
        ),
        (  # bodies kept longer than the ids: the default window (7d)
            lambda: ServeSettings(inbox="i", sources={}, keep_bodies=8 * DAY),
            "ServeSettings: keep_bodies (8d) must be at most dedup_window (7d): the inbox forgets a webhook, its"
            " id and its body, that long after it arrived",
        ),
        (  # the upper key replaced later is held too
            lambda: dataclasses.replace(
                ServeSettings(inbox="i", sources={}, keep_bodies=2 * DAY), dedup_window=DAY
            ),
            "ServeSettings: keep_bodies (2d) must be at most dedup_window (1d): the inbox forgets a webhook, its"
            " id and its body, that long after it arrived",
        ),
    ],
    ids=[
        "margin",
        "margin-equal-to-default",
        "backoff",
        "backoff-equal-to-default",
        "backoff-by-replace",
        "cooldown",
        "cooldown-equal-to-default",
        "resweep-equal-to-default",
        "keep_bodies-over-default-window",
        "window-by-replace",
    ],
)
def test_a_record_built_in_code_is_held_to_its_pair_when_built(build: Any, message: str) -> None:
    """Every pair, in code: the lower key given, even equal to its default, is held to the upper one when the
    record is built (it used to escape, 'given' being 'not the default' in code). ConfigError, exit 2,
    naming both keys and their values; no location, as nothing was read from a file."""
    with pytest.raises(ConfigError) as caught:
        build()
    assert (caught.value.message, caught.value.location, caught.value.exit_code) == (message, None, 2)


@pytest.mark.parametrize(
    ("serve", "message"),
    [
        (
            {"resweep": 30.0, "resweep_cap": "10s"},
            "serve.resweep: must be at most resweep_cap (10s): the first wait for parked work would be longer"
            " than the longest",
        ),
        (
            {"dedup_window": "1d", "keep_bodies": "2d"},
            "serve.keep_bodies: must be at most dedup_window (1d): the inbox forgets a webhook, its id and its"
            " body, that long after it arrived",
        ),
    ],
    ids=["resweep", "keep_bodies"],
)
def test_serve_given_in_code_as_a_file_gives_it_is_held_to_its_pairs(
    serve: dict[str, Any], message: str
) -> None:
    config = _in_code(serve=serve)
    with pytest.raises(ConfigError) as caught:
        Runtime(config)
    assert (caught.value.message, caught.value.location, caught.value.exit_code) == (message, None, 2)


def test_pairs_in_order_or_left_at_their_defaults_pass_in_code() -> None:
    # A lower key left out is None, and adapts to a short cap, whatever else is replaced later.
    retry = dataclasses.replace(RetryPolicy(backoff_cap=0.25), max_attempts=3)
    assert (retry.backoff_base, retry.first_backoff, RetryPolicy().first_backoff) == (None, 0.25, 0.5)
    breaker = dataclasses.replace(BreakerSettings(cooldown_cap=0.5), failures=2)
    assert (breaker.cooldown, breaker.first_cooldown, BreakerSettings().first_cooldown) == (None, 0.5, 1.0)
    config = _in_code(delivery=DeliverySettings(retry=RetryPolicy(backoff_base=1.0, backoff_cap=1.0)))
    fenix = config.connections[0]
    short = dataclasses.replace(fenix.auth, token_ttl=60.0)  # the default margin adapts: no error
    Runtime(dataclasses.replace(config, connections=(dataclasses.replace(fenix, auth=short),)))


def test_an_explicit_refresh_margin_is_honoured_beyond_half_the_token_life(
    tmp_path: Path, sandbox: Any
) -> None:
    """A margin the config accepted (below token_ttl) is the one used: it was capped at half the TTL, so a
    4s token with a 3s margin was renewed after 2s, not 1s. Against the sandbox's real login."""
    import time

    import httpx

    changes = _fenix_auth(token_ttl="4s", refresh_margin="3s")
    config = load_config(write_config(tmp_path, sandbox.url, **changes), environ=environ(sandbox.url))
    auth = Runtime(config).auths["fenix"]
    assert auth.refresh_margin == 3.0  # type: ignore[attr-defined]
    order = {"id": "1", "line_items": []}
    with httpx.Client(auth=auth, base_url=sandbox.url, timeout=10) as client:
        client.post("/api/v1/orders/1/created", json=order)
        time.sleep(1.2)  # past 4s - 3s; short of 4s - 2s, where the capped margin renewed it
        client.post("/api/v1/orders/2/created", json=order)
    assert auth.logins == 2  # type: ignore[attr-defined]
    assert sandbox.stats()["by_endpoint"]["fenix.login"] == 2


def test_a_margin_the_file_writes_is_used_as_written_even_equal_to_the_default(tmp_path: Path) -> None:
    """The file wrote it, so it is the operator's: 5m on an 8m token is 5m, where the default, left out, is
    halved to 4m."""
    margins = []
    for changes in (_fenix_auth(token_ttl="8m", refresh_margin="5m"), _fenix_auth(token_ttl="8m")):
        config = load_config(write_config(tmp_path, URL, **changes), environ=environ(URL))
        margins.append(Runtime(config).auths["fenix"].refresh_margin)  # type: ignore[attr-defined]
    assert margins == [300.0, 240.0]


def test_fenix_session_auth_adapts_only_its_default_margin_and_holds_a_given_one_to_the_pair() -> None:
    """The session holds a margin given to the rule AuthSettings holds (``REFRESH``), in its words: one rule,
    not a copy of it (the copy said ``(120 s)``, and raised ValueError, where the config says 2m and exit 2)."""
    from shipmap.connectors import FenixSessionAuth

    def auth(**kwargs: float) -> FenixSessionAuth:
        return FenixSessionAuth(
            login_url=f"{URL}/login", username="u", password="pass", api_key="key1", store_name="s", **kwargs
        )

    assert auth(token_ttl=120.0).refresh_margin == 60.0  # the default (5m), at most half a short token's life
    assert auth(token_ttl=120.0, refresh_margin=100.0).refresh_margin == 100.0
    assert auth(token_ttl=120.0, refresh_margin=0.0).refresh_margin == 0.0  # renewed as it expires: allowed
    rule = "refresh_margin (2m) must be less than token_ttl (2m): the token would be renewed before every request, or never used"
    with pytest.raises(ConfigError) as refused:
        auth(token_ttl=120.0, refresh_margin=120.0)
    assert (refused.value.message, refused.value.exit_code) == (f"FenixSessionAuth: {rule}", 2)
    with pytest.raises(ConfigError) as settings:
        AuthSettings(**FENIX_SESSION, store_name="s", token_ttl=120.0, refresh_margin=120.0)
    assert settings.value.message == f"AuthSettings: {rule}"
    with pytest.raises(ConfigError) as negative:
        auth(token_ttl=120.0, refresh_margin=-1.0)
    assert negative.value.message == "FenixSessionAuth: refresh_margin must be 0 or more"


def test_a_session_retimed_on_a_reload_is_held_to_the_pair() -> None:
    """``use_refresh_margin`` (a reload that changed only the margin) holds the new margin to the same rule,
    and a refused one leaves the session's margin as it was."""
    from shipmap.connectors import FenixSessionAuth

    session = FenixSessionAuth(
        login_url=f"{URL}/login",
        username="u",
        password="pass",
        api_key="key1",
        store_name="s",
        token_ttl=600.0,
    )
    session.use_refresh_margin(120.0)
    assert session.refresh_margin == 120.0
    with pytest.raises(ConfigError) as refused:
        session.use_refresh_margin(900.0)
    assert refused.value.message == (
        "FenixSessionAuth: refresh_margin (15m) must be less than token_ttl (10m): the token would be renewed"
        " before every request, or never used"
    )
    assert session.refresh_margin == 120.0
    session.use_refresh_margin(None)
    assert session.refresh_margin == 300.0  # the default: 5m, under half of 10m


def test_serve_settings_given_in_code_are_held_to_the_resweep_pair(tmp_path: Path) -> None:
    """Settings handed to Service as they are (built in code, or changed after serve_settings): a resweep
    left out adapts to a short cap; one given later, by dataclasses.replace, is held to it."""
    from shipmap.connectors._config import check_serve_settings

    settings = ServeSettings(inbox=tmp_path / "inbox.db", sources={}, resweep_cap=2.0)
    check_serve_settings(settings)  # adapts
    assert (settings.resweep, settings.first_resweep) == (None, 2.0)
    with pytest.raises(ConfigError) as caught:
        dataclasses.replace(settings, resweep=10.0)
    assert (caught.value.message, caught.value.location) == (
        "ServeSettings: resweep (10s) must be at most resweep_cap (2s): the first wait for parked work would be"
        " longer than the longest",
        None,
    )


def test_serve_settings_given_in_code_are_held_to_the_keep_bodies_pair(tmp_path: Path) -> None:
    """``keep_bodies`` at most ``dedup_window``, held when the settings are built; left out (None), bodies are
    kept for the whole window, whatever it is."""
    from shipmap.connectors._config import check_serve_settings

    with pytest.raises(ConfigError) as caught:
        ServeSettings(inbox=tmp_path / "inbox.db", sources={}, dedup_window=DAY, keep_bodies=2 * DAY)
    assert (caught.value.message, caught.value.location, caught.value.exit_code) == (
        "ServeSettings: keep_bodies (2d) must be at most dedup_window (1d): the inbox forgets a webhook, its id"
        " and its body, that long after it arrived",
        None,
        2,
    )
    for window in (3600.0, 30 * DAY):
        alone = ServeSettings(inbox=tmp_path / "inbox.db", sources={}, dedup_window=window)
        check_serve_settings(alone)
        assert (alone.keep_bodies, alone.bodies_kept_for) == (None, window)
    equal = ServeSettings(inbox=tmp_path / "inbox.db", sources={}, keep_bodies=7 * DAY)  # at most: held
    check_serve_settings(equal)
    assert equal.bodies_kept_for == 7 * DAY
    shorter = ServeSettings(inbox=tmp_path / "inbox.db", sources={}, dedup_window=30 * DAY, keep_bodies=DAY)
    check_serve_settings(shorter)
    assert shorter.bodies_kept_for == DAY
    with pytest.raises(ConfigError) as caught:  # the window's own bounds, in code too
        check_serve_settings(ServeSettings(inbox=tmp_path / "inbox.db", sources={}, dedup_window=60.0))
    assert caught.value.message.startswith("serve.dedup_window: must be at least 1h: ")


def test_a_default_lower_value_adapts_to_a_shorter_cap(tmp_path: Path) -> None:
    """Left at their defaults, a breaker's cooldown (1s) and serve's resweep (5s) wait no longer than a shorter
    cap given alone: the first wait was the default, then the cap (1s, then 500ms)."""
    import asyncio

    from shipmap.connectors._deliver._breaker import CircuitBreaker
    from shipmap.connectors._serve import ServeSettings

    breaker = CircuitBreaker("fenix", BreakerSettings(failures=1, cooldown_cap=0.5), clock=lambda: 100.0)
    asyncio.run(breaker.failure("HTTP 503", breaker.admission()))
    assert (breaker.state.phase, breaker.state.retry_at) == ("open", 100.5)
    settings = ServeSettings(inbox=tmp_path / "inbox.db", sources={}, resweep_cap=2.0)
    assert (settings.first_resweep, ServeSettings(inbox="i", sources={}).first_resweep) == (2.0, 5.0)


def _refused_at(path: Path, line: int, column: int, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``path`` refused by ``load_config`` with ``message`` at ``line``:``column``, and by ``shipmap run`` (exit
    2) with the same located line, no traceback and no secret."""
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ(URL))
    assert (caught.value.message, str(caught.value.location)) == (message, f"{path}:{line}:{column}")
    events = path.parent / "events.jsonl"
    events.write_text("")
    code = main(["run", str(path), "--input", str(events)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"{path}:{line}:{column}: error: {message}"), err
    assert "Traceback" not in err and not any(secret in err for secret in SECRETS)
