"""Fault injection over real HTTP on 127.0.0.1: every fault kind, schedules, seeded rates, token expiry every N,
run-time reconfiguration, and the spec syntax."""

from __future__ import annotations

import email.utils
import json
import re
import socket
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from shipmap.connectors import FaultPlan, Sandbox, SandboxConfig
from shipmap.connectors._sandbox._faults import (
    DEFAULT_FAULT_IDENTITIES,
    FaultInjector,
    fault_rolls,
    request_identity,
)

SEEDS = Path(__file__).resolve().parents[1] / "fixtures" / "seeds"
ORDER = json.loads((SEEDS / "fenix_order_example.json").read_text(encoding="utf-8"))
DG_EXAMPLE = json.loads((SEEDS / "dg_execution_example.json").read_text(encoding="utf-8"))
ORDER_PATH = f"/api/v1/orders/{ORDER['id']}/created"
FENIX_LOGIN = {"username": "demo-user", "password": "demo-pass", "x-api-key": "demo-api-key"}
DG_AUTH = ("demo-key", "demo-secret")


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=10) as client:
        yield client


def dg(client: httpx.Client, sb: Sandbox, external_id: str = "E") -> httpx.Response:
    return client.post(f"{sb.url}/execution", auth=DG_AUTH, json={**DG_EXAMPLE, "external_id": external_id})


def fenix_headers(client: httpx.Client, sb: Sandbox) -> dict[str, str]:
    body = client.post(f"{sb.url}/login", headers=FENIX_LOGIN).json()
    return {
        "store_name": "demo-store",
        "authToken": body["authToken"],
        "x-api-key": "demo-api-key",
        "x-identity": body["x-identity"],
        "content-type": "application/json",
    }


def raw_exchange(sb: Sandbox, path: str = "/execution") -> bytes:
    """Send one DG request over a bare socket and return every byte that came back before the close."""
    body = json.dumps(DG_EXAMPLE).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic ZGVtby1rZXk6ZGVtby1zZWNyZXQ=\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", sb.port), timeout=5) as conn:
        conn.sendall(head + body)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    return received


# ------------------------------------------------------------------------------------------ each kind


def test_schedule_plays_each_status_in_order(sandbox: Sandbox, http: httpx.Client) -> None:
    sandbox.set_faults("schedule=500,502,503,429,ok,retry-after=3")
    responses = [dg(http, sandbox, f"E{i}") for i in range(6)]
    assert [r.status_code for r in responses] == [500, 502, 503, 429, 200, 200]
    assert responses[3].headers["retry-after"] == "3"
    assert "retry-after" not in responses[2].headers
    assert [r.headers.get("x-sandbox-fault") for r in responses[:4]] == ["500", "502", "503", "429"]
    # Faulted requests are not accepted: only the last two are recorded.
    assert [r.external_id for r in sandbox.requests()] == ["E4", "E5"]
    assert sandbox.stats()["faults"] == {"429": 1, "500": 1, "502": 1, "503": 1}


def test_drop_closes_the_connection_without_a_response(sandbox: Sandbox, http: httpx.Client) -> None:
    sandbox.set_faults("schedule=drop,drop")
    assert raw_exchange(sandbox) == b""
    with pytest.raises(httpx.RemoteProtocolError):
        dg(http, sandbox)
    assert raw_exchange(sandbox).startswith(b"HTTP/1.1 200 ")
    assert len(sandbox.requests()) == 1
    assert sandbox.stats()["faults"] == {"drop": 2}


def test_slow_delays_the_answer_of_a_handled_request(sandbox: Sandbox, http: httpx.Client) -> None:
    sandbox.set_faults("schedule=slow:0.3,ok")
    started = time.monotonic()
    response = dg(http, sandbox, "S1")
    assert response.status_code == 200 and time.monotonic() - started >= 0.3
    assert response.headers["x-sandbox-fault"] == "slow"
    fast = dg(http, sandbox, "S2")  # the schedule's next step: answered as it came, no delay
    assert fast.status_code == 200 and "x-sandbox-fault" not in fast.headers, fast.headers
    assert [(r.external_id, r.fault) for r in sandbox.requests()] == [("S1", "slow"), ("S2", None)]


def test_a_client_that_times_out_on_slow_and_retries_makes_a_visible_duplicate(sandbox: Sandbox) -> None:
    sandbox.set_faults("slow=1:0.4")  # every request slow
    with httpx.Client(trust_env=False, timeout=0.1) as impatient, pytest.raises(httpx.ReadTimeout):
        dg(impatient, sandbox, "once")
    sandbox.set_faults(None)
    with httpx.Client(trust_env=False, timeout=5) as client:
        assert dg(client, sandbox, "once").status_code == 200
    [duplicate] = sandbox.duplicates()["dg_external_id"]
    assert (duplicate["key"], duplicate["count"], duplicate["distinct_bodies"]) == ("once", 2, 1)


def test_expire_every_n_fenix_requests(sandbox: Sandbox, http: httpx.Client) -> None:
    sandbox.set_faults("expire-every=2")
    headers = fenix_headers(http, sandbox)
    url = sandbox.url + ORDER_PATH
    assert http.post(url, headers=headers, json=ORDER).status_code == 201
    assert dg(http, sandbox).status_code == 200  # DG has no token: it does not count
    expired = http.post(url, headers=headers, json=ORDER)
    assert expired.status_code == 401 and "expired" in expired.json()["errors"][0]["message"]
    headers = fenix_headers(http, sandbox)  # login does not count either
    assert http.post(url, headers=headers, json=ORDER).status_code == 201
    assert http.post(url, headers=headers, json=ORDER).status_code == 401
    assert sandbox.stats()["faults"] == {"expire": 2}


def test_expire_as_a_schedule_step(sandbox: Sandbox, http: httpx.Client) -> None:
    headers = fenix_headers(http, sandbox)
    sandbox.set_faults(FaultPlan(schedule=("ok", "expire")))
    url = sandbox.url + ORDER_PATH
    assert [http.post(url, headers=headers, json=ORDER).status_code for _ in range(3)] == [201, 401, 401]


@pytest.mark.parametrize(
    ("spec", "allowed"),
    [
        ("5xx=1", {500, 502, 503}),
        ("5xx=1:502", {502}),
        ("5xx=1:500/504", {500, 504}),
        ("429=1,retry-after=0", {429}),
    ],
)
def test_certain_status_faults(sandbox: Sandbox, http: httpx.Client, spec: str, allowed: set[int]) -> None:
    sandbox.set_faults(spec)
    statuses = {dg(http, sandbox).status_code for _ in range(12)}
    assert statuses <= allowed
    assert sandbox.requests() == []
    if allowed == {500, 502, 503}:
        assert len(statuses) > 1  # the code is drawn, not fixed


def test_certain_drop_and_slow_by_rate(sandbox: Sandbox, http: httpx.Client) -> None:
    sandbox.set_faults("drop=1")
    assert raw_exchange(sandbox) == b""
    sandbox.set_faults("slow=1:0.2")
    started = time.monotonic()
    assert dg(http, sandbox).status_code == 200 and time.monotonic() - started >= 0.2


def test_rates_are_seeded_per_server(sandbox_factory: Callable[..., Sandbox], http: httpx.Client) -> None:
    spec = "5xx=0.3,429=0.2,seed=7,retry-after=0"
    first, second, other = sandbox_factory(faults=spec), sandbox_factory(faults=spec), sandbox_factory()
    other.set_faults(spec.replace("seed=7", "seed=8"))
    runs = [[dg(http, sb).status_code for _ in range(60)] for sb in (first, second, other)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    errors = sum(1 for status in runs[0] if status >= 500)
    limited = runs[0].count(429)
    assert 8 <= errors <= 28 and 4 <= limited <= 20 and runs[0].count(200) == 60 - errors - limited
    assert first.stats()["accepted"] == runs[0].count(200)


def test_a_seed_gives_each_request_the_same_faults_whatever_the_arrival_order(
    sandbox_factory: Callable[..., Sandbox], http: httpx.Client
) -> None:
    # Concurrent clients on a loaded machine reorder requests: the n-th attempt of one request (its
    # Idempotency-Key, or method, path and body without one) must get the same fault regardless.
    spec = "5xx=0.3,429=0.2,seed=7,retry-after=0"
    in_order, interleaved = sandbox_factory(faults=spec), sandbox_factory(faults=spec)
    names = [f"E{i}" for i in range(30)]

    def attempt(sb: Sandbox, name: str) -> int:
        headers = {"Idempotency-Key": f"key-{name}"} if int(name[1:]) % 2 else {}
        body = {**DG_EXAMPLE, "external_id": name}
        return http.post(f"{sb.url}/execution", auth=DG_AUTH, json=body, headers=headers).status_code

    one_by_one: dict[str, list[int]] = {}
    for name in names:  # each request retried until accepted before the next one starts
        statuses = one_by_one.setdefault(name, [attempt(in_order, name)])
        while statuses[-1] != 200 and len(statuses) < 12:
            statuses.append(attempt(in_order, name))
    round_robin: dict[str, list[int]] = {name: [] for name in names}
    pending = names[::-1]
    while pending:  # last first, one attempt of each still failing request per round
        for name in pending:
            round_robin[name].append(attempt(interleaved, name))
        pending = [n for n in pending if round_robin[n][-1] != 200 and len(round_robin[n]) < 12]
    assert round_robin == one_by_one
    assert sum(len(statuses) > 1 for statuses in one_by_one.values()) >= 5  # faults were injected
    assert in_order.stats()["faults"] == interleaved.stats()["faults"]


def test_login_and_sandbox_api_are_spared_unless_asked(sandbox: Sandbox, http: httpx.Client) -> None:
    sandbox.set_faults("5xx=1:503")
    assert http.post(f"{sandbox.url}/login", headers=FENIX_LOGIN).status_code == 200
    assert http.get(f"{sandbox.url}/_sandbox/stats").status_code == 200
    assert dg(http, sandbox).status_code == 503
    sandbox.set_faults("5xx=1:503,login=true")
    assert http.post(f"{sandbox.url}/login", headers=FENIX_LOGIN).status_code == 503
    assert http.get(f"{sandbox.url}/_sandbox/requests").status_code == 200


def test_a_schedule_step_gives_a_5xx_its_retry_after(sandbox: Sandbox, http: httpx.Client) -> None:
    """``503:2`` is a 503 that says ``Retry-After: 2``; a bare 5xx says none; ``429:0`` overrides
    ``retry-after`` for its step."""
    sandbox.set_faults("schedule=503:2,502,429:0,429,retry-after=7")
    answers = [dg(http, sandbox) for _ in range(4)]
    assert [(a.status_code, a.headers.get("retry-after")) for a in answers] == [
        (503, "2"),
        (502, None),
        (429, "0"),
        (429, "7"),
    ]
    assert answers[0].headers["x-sandbox-fault"] == "503" and answers[0].json()["status"] == 503
    assert sandbox.stats()["faults"] == {"429": 2, "502": 1, "503": 1}


def test_retry_after_date_sends_each_wait_as_an_http_date(sandbox: Sandbox, http: httpx.Client) -> None:
    sandbox.set_faults("schedule=503:3,429,retry-after=2,retry-after-date=true")
    waits = []
    for _ in range(2):
        before = time.time()
        answer = dg(http, sandbox)
        header = answer.headers["retry-after"]
        assert re.fullmatch(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT", header), header
        waits.append(email.utils.parsedate_to_datetime(header).timestamp() - before)
    # The first whole second at least the wait away: never sooner, at most a second later.
    assert 3 <= waits[0] <= 4 + 0.5 and 2 <= waits[1] <= 3 + 0.5, waits


def test_faults_come_before_auth(sandbox: Sandbox, http: httpx.Client) -> None:
    sandbox.set_faults("schedule=503")
    response = http.post(f"{sandbox.url}/execution", auth=("demo-key", "wrong"), json=DG_EXAMPLE)
    assert response.status_code == 503
    assert sandbox.stats()["rejected"] == {}


def test_reset_replays_the_plan_from_its_start(sandbox: Sandbox, http: httpx.Client) -> None:
    sandbox.set_faults("schedule=503,ok")
    assert [dg(http, sandbox).status_code for _ in range(3)] == [503, 200, 200]
    sandbox.reset()
    assert [dg(http, sandbox).status_code for _ in range(2)] == [503, 200]
    assert sandbox.faults == FaultPlan.parse("schedule=503,ok")


def test_repeat_loops_the_schedule(sandbox: Sandbox, http: httpx.Client) -> None:
    sandbox.set_faults("schedule=ok,ok,500,repeat=true")
    assert [dg(http, sandbox).status_code for _ in range(7)] == [200, 200, 500, 200, 200, 500, 200]


# ------------------------------------------------------------------------------------ run-time control


def test_faults_are_reconfigured_over_http(sandbox: Sandbox, http: httpx.Client) -> None:
    endpoint = f"{sandbox.url}/_sandbox/faults"
    snapshot = http.post(endpoint, json={"spec": "schedule=503,seed=3"}).json()
    assert snapshot["spec"] == "seed=3,schedule=503" and snapshot["seed"] == 3
    assert dg(http, sandbox).status_code == 503
    assert http.get(endpoint).json()["injected"] == {"503": 1}
    # A plan's fields as JSON, and the spec as plain text, work too.
    http.post(endpoint, json={"schedule": [429], "retry_after": 9})
    assert dg(http, sandbox).headers["retry-after"] == "9"
    cleared = http.post(endpoint, content="none", headers={"content-type": "text/plain"})
    assert cleared.json()["spec"] == "none"
    assert dg(http, sandbox).status_code == 200
    for bad in ({"spec": "bogus=1"}, {"error_rate": 2}, {"nope": 1}, {"schedule": ["418"]}, [1]):
        response = http.post(endpoint, json=bad)
        assert response.status_code == 400, bad
        assert response.json()["errors"][0]["field"] == "faults"
    assert sandbox.faults == FaultPlan()


def test_an_unseeded_plan_reports_the_seed_it_drew(sandbox: Sandbox) -> None:
    sandbox.set_faults("5xx=0.5")
    snapshot = httpx.get(f"{sandbox.url}/_sandbox/faults", trust_env=False).json()
    assert isinstance(snapshot["seed"], int)
    assert snapshot["plan"]["seed"] is None


# ------------------------------------------------------------------------------------- plans per API


def test_a_plan_of_fenix_s_own_takes_fenix_down_while_dg_answers(
    sandbox: Sandbox, http: httpx.Client
) -> None:
    sandbox.set_faults("5xx=1:503", api="fenix")
    headers = fenix_headers(http, sandbox)  # login is spared, as by any plan without login=true
    down = http.post(sandbox.url + ORDER_PATH, headers=headers, json=ORDER)
    assert down.status_code == 503
    assert (down.headers["x-sandbox-fault"], down.headers["x-sandbox-fault-plan"]) == ("503", "fenix")
    up = dg(http, sandbox, "E-up")
    assert up.status_code == 200 and "x-sandbox-fault-plan" not in up.headers
    # Each recorded request says which plan answered it; the stats say what each plan injected.
    assert [(r.endpoint, r.fault_plan) for r in sandbox.requests()] == [
        ("fenix.login", "fenix"),
        ("dg.execution", "both"),
    ]
    assert sandbox.requests()[1].to_dict()["fault_plan"] == "both"
    stats = sandbox.stats()
    assert stats["faults"] == {"503": 1}
    assert stats["faults_by_plan"] == {"both": {}, "fenix": {"503": 1}}
    assert [(f.endpoint, f.status, f.plan) for f in sandbox.faulted()] == [("fenix.orders", 503, "fenix")]
    assert sandbox.faults_of("fenix") == FaultPlan.parse("5xx=1:503")
    assert sandbox.faults_of("dg") == sandbox.faults == FaultPlan()


def test_a_plan_of_an_api_s_own_plays_apart_from_the_plan_for_both(
    sandbox: Sandbox, http: httpx.Client
) -> None:
    """The plan for both keeps its one schedule for both APIs; an API with a plan of its own takes no step of
    it, and its own schedule is its own."""
    sandbox.set_faults("schedule=502,429,ok")
    sandbox.set_faults("schedule=500,ok", api="dg")
    headers = fenix_headers(http, sandbox)
    url = sandbox.url + ORDER_PATH
    assert [dg(http, sandbox, f"E{n}").status_code for n in range(3)] == [500, 200, 200]
    assert [http.post(url, headers=headers, json=ORDER).status_code for _ in range(4)] == [502, 429, 201, 201]
    assert sandbox.stats()["faults_by_plan"] == {"both": {"429": 1, "502": 1}, "dg": {"500": 1}}
    assert sandbox.stats()["faults"] == {"429": 1, "500": 1, "502": 1}
    sandbox.reset()  # every plan in force plays again from its start, and stays
    assert dg(http, sandbox).status_code == 500
    headers = fenix_headers(http, sandbox)
    assert http.post(url, headers=headers, json=ORDER).status_code == 502
    # The plan for both, set again, answers both APIs again.
    sandbox.set_faults("schedule=503,503")
    assert [dg(http, sandbox).status_code, http.post(url, headers=headers, json=ORDER).status_code] == [
        503,
        503,
    ]
    assert sandbox.stats()["faults_by_plan"] == {"both": {"503": 2}}


def test_plans_per_api_over_http(sandbox: Sandbox, http: httpx.Client) -> None:
    endpoint = f"{sandbox.url}/_sandbox/faults"
    snapshot = http.post(f"{endpoint}?api=fenix", json={"spec": "5xx=1:502,seed=4"}).json()
    assert (snapshot["for"], snapshot["answers"], snapshot["spec"]) == (
        "fenix",
        ["fenix"],
        "5xx=1:502,seed=4",
    )
    headers = fenix_headers(http, sandbox)
    assert http.post(sandbox.url + ORDER_PATH, headers=headers, json=ORDER).status_code == 502
    assert dg(http, sandbox).status_code == 200
    assert http.get(f"{endpoint}?api=fenix").json()["injected"] == {"502": 1}
    # DG has no plan of its own: the plan for both answers it, and says so.
    for shown in (http.get(f"{endpoint}?api=dg").json(), http.get(endpoint).json()):
        assert (shown["for"], shown["answers"], shown["spec"]) == ("both", ["dg"], "none")
    for query, body in (("?api=fedex", {"spec": "5xx=1"}), ("?api=", {"spec": "5xx=1"}), ("?api=dg", [1])):
        response = http.post(endpoint + query, json=body)
        assert response.status_code == 400, query
        assert response.json()["errors"][0]["field"] == ("faults" if body == [1] else "api")
    assert "unknown api 'fedex'; use fenix or dg" in http.get(f"{endpoint}?api=fedex").text
    assert sandbox.faults_of("dg") == FaultPlan()  # the refused ones changed nothing
    cleared = http.post(endpoint, content="none", headers={"content-type": "text/plain"}).json()
    assert (cleared["for"], cleared["answers"]) == ("both", ["fenix", "dg"])
    assert http.post(sandbox.url + ORDER_PATH, headers=headers, json=ORDER).status_code == 201


def test_delete_removes_an_api_s_own_plan_and_faulted_names_the_plan_over_http(
    sandbox: Sandbox, http: httpx.Client
) -> None:
    """``DELETE /_sandbox/faults?api=fenix`` makes Fenix follow the plan for both again, which goes on from
    where it stands; ``GET /_sandbox/faulted`` (and ``faulted()``) says which plan injected each answer, so a
    test with plans per API can tell them apart."""
    endpoint = f"{sandbox.url}/_sandbox/faults"
    http.post(endpoint, json={"spec": "schedule=502,503,ok"})
    http.post(f"{endpoint}?api=fenix", json={"spec": "5xx=1:500"})
    headers = fenix_headers(http, sandbox)
    url = sandbox.url + ORDER_PATH
    assert http.post(url, headers=headers, json=ORDER).status_code == 500  # Fenix's own plan
    assert dg(http, sandbox, "E1").status_code == 502  # the plan for both, its first step

    removed = http.delete(f"{endpoint}?api=fenix")
    assert removed.status_code == 200, removed.text
    shown = removed.json()
    assert (shown["for"], shown["answers"], shown["spec"]) == ("both", ["fenix", "dg"], "schedule=502,503,ok")
    assert sandbox.faults_of("fenix") == FaultPlan.parse("schedule=502,503,ok")
    # Fenix takes the plan for both's next step (503), then its schedule has run out: ok.
    assert [http.post(url, headers=headers, json=ORDER).status_code for _ in range(2)] == [503, 201]

    faulted = http.get(f"{sandbox.url}/_sandbox/faulted").json()
    assert faulted["count"] == 3
    assert [(f["endpoint"], f["status"], f["plan"]) for f in faulted["faulted"]] == [
        ("fenix.orders", 500, "fenix"),
        ("dg.execution", 502, "both"),
        ("fenix.orders", 503, "both"),
    ]
    assert [f.to_dict() for f in sandbox.faulted()] == faulted["faulted"]
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", f["received_at"]) for f in faulted["faulted"]
    )
    assert sandbox.stats()["faults_by_plan"] == {"both": {"502": 1, "503": 1}}  # the plans in force

    # Again, or for an API without a plan of its own: nothing to remove, no error, nothing changes.
    assert http.delete(f"{endpoint}?api=fenix").json()["for"] == "both"
    assert http.delete(f"{endpoint}?api=dg").json()["spec"] == "schedule=502,503,ok"
    # Without an api, or with one the sandbox does not have: a 400 naming api, and the plans stay.
    http.post(f"{endpoint}?api=dg", json={"spec": "5xx=1"})
    for query in ("", "?api=fedex"):
        refused = http.delete(endpoint + query)
        assert refused.status_code == 400, query
        assert refused.json()["errors"][0]["field"] == "api"
    assert "POST none" in http.delete(endpoint).json()["errors"][0]["message"]
    assert sandbox.faults_of("dg") == FaultPlan.parse("5xx=1")
    sandbox.remove_faults_of("dg")  # the same from Python
    assert sandbox.faults_of("dg") == sandbox.faults


def test_faulted_lists_the_connections_it_dropped_with_no_status_over_http(
    sandbox: Sandbox, http: httpx.Client
) -> None:
    """A drop is a fault the sandbox injected like a 5xx: ``GET /_sandbox/faulted`` (and ``faulted()``) lists
    it, in its place among the others, with the plan that dropped it and ``status`` null (no answer was sent,
    so there is no status), as ``faults_by_plan`` counts it."""
    endpoint = f"{sandbox.url}/_sandbox/faults"
    http.post(endpoint, json={"spec": "schedule=drop,503,ok"})
    http.post(f"{endpoint}?api=fenix", json={"spec": "schedule=drop,ok"})
    headers = fenix_headers(http, sandbox)  # /login is not faulted unless the plan says login=true
    url = sandbox.url + ORDER_PATH
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(url, headers=headers, json=ORDER)  # Fenix's own plan drops it
    assert raw_exchange(sandbox) == b""  # the plan for both drops DG's first: not a byte back
    assert dg(http, sandbox, "E2").status_code == 503
    assert http.post(url, headers=headers, json=ORDER).status_code == 201
    assert dg(http, sandbox, "E3").status_code == 200

    answer = http.get(f"{sandbox.url}/_sandbox/faulted")
    assert answer.status_code == 200
    faulted = answer.json()
    assert faulted["count"] == 3
    assert [(f["endpoint"], f["status"], f["plan"]) for f in faulted["faulted"]] == [
        ("fenix.orders", None, "fenix"),
        ("dg.execution", None, "both"),
        ("dg.execution", 503, "both"),
    ]
    assert [f.to_dict() for f in sandbox.faulted()] == faulted["faulted"]
    assert [f.status for f in sandbox.faulted()] == [None, None, 503]
    assert sandbox.stats()["faults_by_plan"] == {"both": {"drop": 1, "503": 1}, "fenix": {"drop": 1}}
    assert [r.endpoint for r in sandbox.requests()] == ["fenix.login", "fenix.orders", "dg.execution"]


def test_a_sandbox_starts_with_plans_per_api(
    sandbox_factory: Callable[..., Sandbox], http: httpx.Client
) -> None:
    sb = sandbox_factory(faults="schedule=429", dg_faults=FaultPlan(error_rate=1.0, error_statuses=(504,)))
    assert [dg(http, sb).status_code for _ in range(2)] == [504, 504]
    headers = fenix_headers(http, sb)
    assert [http.post(sb.url + ORDER_PATH, headers=headers, json=ORDER).status_code for _ in range(2)] == [
        429,
        201,
    ]
    assert (sb.config.dg_faults, sb.config.fenix_faults) == (FaultPlan.parse("5xx=1:504"), None)
    with pytest.raises(ValueError, match="unknown api 'DG'; use fenix or dg"):
        sb.set_faults("5xx=1", api="DG")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- the spec


def test_the_spec_from_the_docs_parses() -> None:
    plan = FaultPlan.parse("5xx=0.05,429=0.02,drop=0.01,slow=0.01:2.5,expire-every=500,seed=7,retry-after=1")
    assert plan == FaultPlan(
        error_rate=0.05,
        rate_limit_rate=0.02,
        drop_rate=0.01,
        slow_rate=0.01,
        slow_delay=2.5,
        expire_every=500,
        seed=7,
        retry_after=1,
    )
    assert FaultPlan.parse(plan.spec()) == plan
    assert FaultPlan.parse("schedule=ok,500,429,ok").schedule == ("ok", "500", "429", "ok")


def test_python_plans_take_lists_and_ints() -> None:
    plan = FaultPlan(schedule=["OK", 503, "Slow:0.5"], error_statuses=[502])  # type: ignore[arg-type]
    assert plan.schedule == ("ok", "503", "slow:0.5") and plan.error_statuses == (502,)
    assert plan == FaultPlan.parse("schedule=ok,503,slow:0.5,5xx=0:502")
    for bad in ({"seed": "7"}, {"retry_after": 1.5}, {"error_statuses": ["500"]}, {"repeat": "yes"}):
        with pytest.raises(ValueError):
            FaultPlan.from_dict(bad)


@pytest.mark.parametrize(
    "spec",
    [
        "none",
        "",
        "5xx=0.1:502/503,login=true",
        "schedule=ok, 503 ,slow:0.5,drop,expire,429,repeat=true",
        "slow=0:3",
        "429=0.5,retry-after=0,seed=0",
        "schedule=503:2,429:0,502,retry-after-date=true",
    ],
)
def test_spec_round_trips(spec: str) -> None:
    plan = FaultPlan.parse(spec)
    assert FaultPlan.parse(plan.spec()) == plan
    assert FaultPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("5xx=1.5", "probability"),
        ("5xx=0.6,429=0.6", "more than 1"),
        ("5xx=0.1:404", "5xx codes"),
        ("schedule=ok,teapot", "teapot"),
        ("bogus=1", "unknown key"),
        ("drop", "KEY=VALUE"),
        ("expire-every=-1", "expire_every"),
        ("repeat=true", "repeat needs a schedule"),
        ("login=maybe", "true or false"),
        ("seed=x", "seed=x"),
        ("schedule=503:soon", "503:soon"),
        ("schedule=503:3601", "0 to 3600 seconds"),
        ("schedule=418:2", "418:2"),
        ("schedule=503:-1", "503:-1"),
        ("retry-after-date=perhaps", "true or false"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FaultPlan.parse(spec)


def test_faulted_answers_and_fault_identities_stay_within_their_caps_over_http(
    sandbox_factory: Callable[..., Sandbox], http: httpx.Client
) -> None:
    """A sandbox left running stays bounded: ``GET /_sandbox/faulted`` keeps the newest ``faulted`` entries and
    each fault plan the attempts of the ``fault_identities`` most recent request identities; what is let go is
    counted where the structure is reported."""
    sb = sandbox_factory(faulted=3, fault_identities=3, faults="5xx=1:503", source_faults="5xx=1:503")
    for n in range(5):
        answer = http.post(
            f"{sb.url}/execution",
            auth=DG_AUTH,
            headers={"Idempotency-Key": f"K{n}"},
            json={**DG_EXAMPLE, "external_id": f"E{n}"},
        )
        assert answer.status_code == 503
        assert http.get(f"{sb.url}/_source/bigcommerce/orders/{n}").status_code == 503
    faulted = http.get(f"{sb.url}/_sandbox/faulted").json()
    assert (faulted["count"], faulted["forgotten"], len(faulted["faulted"])) == (3, 2, 3)
    plan = http.get(f"{sb.url}/_sandbox/faults").json()
    assert (plan["identities"], plan["identities_forgotten"], plan["injected"]) == (3, 2, {"503": 5})
    source_plan = http.get(f"{sb.url}/_sandbox/source-faults").json()
    assert (source_plan["identities"], source_plan["identities_forgotten"]) == (3, 2)
    assert http.get(f"{sb.url}/_sandbox/stats").json()["faulted_forgotten"] == 2
    # A plan of an API's own is held to the same cap.
    http.post(f"{sb.url}/_sandbox/faults?api=dg", json={"spec": "5xx=1:502"})
    for n in range(4):
        answer = http.post(
            f"{sb.url}/execution", auth=DG_AUTH, headers={"Idempotency-Key": f"O{n}"}, json=DG_EXAMPLE
        )
        assert answer.status_code == 502
    own = http.get(f"{sb.url}/_sandbox/faults?api=dg").json()
    assert (own["for"], own["identities"], own["identities_forgotten"]) == ("dg", 3, 1)
    assert http.get(f"{sb.url}/_sandbox/faulted").json()["forgotten"] == 6
    http.post(f"{sb.url}/_sandbox/reset")
    assert http.get(f"{sb.url}/_sandbox/faulted").json() == {"count": 0, "forgotten": 0, "faulted": []}
    assert http.get(f"{sb.url}/_sandbox/faults?api=dg").json()["identities_forgotten"] == 0
    with pytest.raises(ValueError, match="faulted must be 1 or more, got 0"):
        SandboxConfig(faulted=0)
    with pytest.raises(ValueError, match="fault_identities must be 1 or more, got 0"):
        SandboxConfig(fault_identities=0)


def test_a_fault_plan_left_at_its_default_cap_stays_within_the_memory_docs_say() -> None:
    """``--fault-identities`` left alone: a plan that turns over twice its cap of identities holds at
    most the ~13 MB docs/sandbox.md says (~260 bytes an identity at the dict's peak). The old default,
    1,000,000, reached 175 MB here (this test on main), on a sandbox whose user never set it."""
    injector = FaultInjector(FaultPlan.parse("5xx=0.5:503,seed=1"))
    tracemalloc.start()
    try:
        for number in range(2 * DEFAULT_FAULT_IDENTITIES):  # 16 bytes, as request_identity's digest
            injector.decide(identity=number.to_bytes(16, "big"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, f"{peak / 1e6:.1f} MB"
    snapshot = injector.snapshot()
    assert snapshot["identities"] == DEFAULT_FAULT_IDENTITIES
    assert snapshot["identities_forgotten"] == DEFAULT_FAULT_IDENTITIES


def test_a_forgotten_fault_identity_draws_as_a_first_attempt_again(
    sandbox_factory: Callable[..., Sandbox], http: httpx.Client
) -> None:
    """Past ``fault_identities`` a request's attempt count is let go: its next retry draws as attempt 1."""
    key = request_identity("POST", "/execution", b"", "K")
    # A seed whose first attempt of K is a 503 and whose second is not (5xx=0.5): the retry tells them apart.
    seed = next(s for s in range(1000) if fault_rolls(s, key, 1)[0] < 0.5 <= fault_rolls(s, key, 2)[0])

    def send(sb: Sandbox, idempotency_key: str) -> int:
        headers = {"Idempotency-Key": idempotency_key}
        return http.post(f"{sb.url}/execution", auth=DG_AUTH, headers=headers, json=DG_EXAMPLE).status_code

    forgetful = sandbox_factory(fault_identities=1, faults=f"5xx=0.5:503,seed={seed}")
    assert send(forgetful, "K") == 503
    send(forgetful, "other")  # K's attempt count is let go for it
    assert send(forgetful, "K") == 503  # drawn as K's first attempt again
    remembering = sandbox_factory(fault_identities=2, faults=f"5xx=0.5:503,seed={seed}")
    assert send(remembering, "K") == 503
    send(remembering, "other")
    assert send(remembering, "K") != 503  # K's second attempt
