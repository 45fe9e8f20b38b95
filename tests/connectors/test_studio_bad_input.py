"""shipmap studio's API under bad input, over real HTTP: bodies that are not JSON, too large or that stall;
files that are not UTF-8; cases files and configs that cannot be read; each a located message, never a 500,
and the studio serves the next request."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from shipmap.connectors._studio import Studio
from test_studio_support import MAPPING, evaluate, make_workspace


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_workspace(tmp_path)


@pytest.fixture
def client(workspace: Path) -> Iterator[httpx.Client]:
    with (
        Studio(workspace) as studio,
        httpx.Client(base_url=studio.base_url, headers={"X-Shipmap-Token": studio.token}, timeout=30) as c,
    ):
        yield c


def test_a_request_body_that_is_not_json_gets_a_located_message(client: httpx.Client) -> None:
    response = client.post("/api/evaluate", content=b'{"mapping": "x",,}')
    assert response.status_code == 400
    assert response.json() == {
        "error": "request body is not JSON: Expecting property name enclosed in double quotes (line 1, column 17)"
    }
    assert client.post("/api/evaluate", content=b"[1]").json() == {
        "error": "request body must be a JSON object"
    }
    assert client.post("/api/evaluate", json={"mapping": 3}).json() == {"error": "'mapping' must be a string"}
    assert client.put(f"/api/file?path={MAPPING}", content=b"\xff").json() == {
        "error": "request body is not UTF-8 text"
    }


def test_a_file_that_is_not_utf8_is_located_at_its_first_bad_byte(
    client: httpx.Client, workspace: Path
) -> None:
    # A Latin-1 export, as some shops' admin pages still write them: the line and column of the first bad byte.
    (workspace / "samples" / "latin1.json").write_bytes(
        b'{\r\n  "id": 7,\r\n  "city": "Montr\xe9al"\r\n}\r\n'
    )
    response = client.get("/api/file", params={"path": "samples/latin1.json"})
    assert response.status_code == 400
    assert response.json() == {
        "error": "samples/latin1.json:3:17: error: cannot read file: not UTF-8 text "
        "(byte 0xe9: invalid continuation byte); save it as UTF-8"
    }
    # A UTF-8 file with Windows line ends still reads as the editor shows it.
    (workspace / "samples" / "crlf.json").write_bytes('{\r\n  "city": "Montréal"\r\n}\r\n'.encode())
    crlf = client.get("/api/file", params={"path": "samples/crlf.json"})
    assert crlf.json()["text"] == '{\n  "city": "Montréal"\n}\n'


def test_a_body_that_stalls_is_let_go_and_the_studio_keeps_serving(workspace: Path) -> None:
    # A client that declares a body and stops sending it would otherwise hold its request open forever.
    with Studio(workspace, body_deadline=0.5) as studio:
        with socket.create_connection(("127.0.0.1", int(studio.base_url.rsplit(":", 1)[1]))) as stalled:
            stalled.settimeout(20)  # the test's own deadline: the studio answers long before
            stalled.sendall(
                b"POST /api/evaluate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + f"X-Shipmap-Token: {studio.token}\r\n".encode()
                + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                + b'{"mapping": "shipmap'
            )
            answer = b""
            while b"}" not in answer:
                piece = stalled.recv(4096)
                if not piece:
                    break
                answer += piece
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), head
        assert json.loads(body) == {"error": "the request body did not arrive within 0.5 s"}
        with httpx.Client(base_url=studio.base_url, headers={"X-Shipmap-Token": studio.token}) as client:
            assert client.get("/api/workspace").status_code == 200


def test_a_huge_sample_is_refused_saying_how_large_and_what_the_studio_takes(
    client: httpx.Client, workspace: Path
) -> None:
    huge = json.dumps({"id": 1, "note": "x" * (10 * 1024 * 1024)})
    response = client.post("/api/evaluate", json={"mapping": "shipmap: 1", "sample": huge})
    assert response.status_code == 413
    assert response.json() == {
        "error": "the request is 10.0 MiB: the studio takes a mapping and a sample of up to 4 MiB each "
        "(8 MiB in all); map a few of the sample's documents"
    }
    assert evaluate(client, workspace)["targets"]  # the next request is served


def test_errors_in_the_cases_file_and_the_config_name_them_as_the_page_does(
    client: httpx.Client, workspace: Path
) -> None:
    # Relative to the studio's directory, as the pickers name files, never by the absolute path the loaders
    # were given; and a cases file shipmap test cannot read is a message when saving a case, not a 500.
    cases = workspace / "driftwood.cases.yaml"
    broken = cases.read_text(encoding="utf-8").replace("cases:", "cases: [", 1)
    cases.write_text(broken, encoding="utf-8")
    mapping = (workspace / MAPPING).read_text(encoding="utf-8")
    ran = client.post("/api/cases/run", json={"mapping": mapping, "mapping_file": MAPPING}).json()
    assert ran["error"].startswith("driftwood.cases.yaml:6:3: error: not valid YAML")
    assert str(workspace) not in json.dumps(ran)
    saved = client.post(
        "/api/cases/save",
        json={"mapping": mapping, "mapping_file": MAPPING, "sample": "{}", "name": "x"},
    )
    assert saved.status_code == 400
    assert saved.json()["error"].startswith(
        "driftwood.cases.yaml cannot be read; fix it first:\ndriftwood.cases.yaml:6:3: error: not valid YAML"
    )
    assert cases.read_text(encoding="utf-8") == broken
    config = workspace / "config.yaml"
    config.write_text(
        config.read_text(encoding="utf-8").replace("api: fenix", "api: fenixx"), encoding="utf-8"
    )
    note = evaluate(client, workspace)["requests_note"]
    assert note.startswith("config.yaml cannot be used (config.yaml:10:10: error: connections.fenix.api: ")  # type: ignore[union-attr]
    assert str(workspace) not in note  # type: ignore[operator]


def test_save_as_case_with_a_sample_that_is_not_json_is_located(
    client: httpx.Client, workspace: Path
) -> None:
    mapping = (workspace / MAPPING).read_text(encoding="utf-8")
    saved = client.post(
        "/api/cases/save",
        json={"mapping": mapping, "mapping_file": MAPPING, "sample": '{"id": 1}\n{"id": 2,,}\n', "index": 1},
    )
    assert saved.status_code == 400
    assert saved.json()["error"] == (
        "the sample cannot be saved as a case:\nsample:2:10: error: not JSON: "
        'Expecting property name enclosed in double quotes, column 10\n  {"id": 2,,}'
    )
