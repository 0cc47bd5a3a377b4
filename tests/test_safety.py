"""Safe to leave running: what a web page on another origin, a DNS-rebinding attacker, a client
without the key, and plain bad input can do to heylook (nothing), each refused in its API's shape
while the server keeps serving. What the middleware and the routes decide runs in-process
(tests.inprocess); what needs a real connection, real generation or the CLI runs against a real
`heylook serve`."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from heylook.settings import DEFAULT_CORS_ORIGINS, Settings, allowed_origins
from tests.inprocess import InProcessServer, serve_in_process
from tests.server import RunningServer

KEY = "sk-test-0123456789"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[RunningServer]:
    """No API key; a short body deadline and token cap, so slow bodies and long replies are quick."""
    root = tmp_path_factory.mktemp("open-server")
    (root / "models.yaml").write_text(
        "# kept\n" + yaml.safe_dump({"models": {"tiny": {"model": str(tiny_model_dir)}}}, sort_keys=False)
    )
    running = RunningServer(
        root / "models.yaml", root / "server.log", "--body-timeout", "1", "--max-tokens-limit", "8"
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("keyed-server")
    (root / "models.yaml").write_text(yaml.safe_dump({"models": {"tiny": {"model": str(tiny_model_dir)}}}))
    running = RunningServer(
        root / "models.yaml", root / "server.log", "--api-key", KEY,
        "--cors-origins", "http://good.example", "--allowed-hosts", "heylook.test",
    )  # fmt: skip
    yield running
    running.stop()


def tiny_models(folder: Path, tiny_model_dir: Path) -> Path:
    path = folder / "models.yaml"
    path.write_text("# kept\n" + yaml.safe_dump({"models": {"tiny": {"model": str(tiny_model_dir)}}}))
    return path


@pytest.fixture
async def open_app(tmp_path: Path, tiny_model_dir: Path) -> AsyncIterator[InProcessServer]:
    """The open server's settings, in-process."""
    async with serve_in_process(tiny_models(tmp_path, tiny_model_dir), Settings(body_timeout=1)) as app:
        yield app


@pytest.fixture
async def keyed_app(tmp_path: Path, tiny_model_dir: Path) -> AsyncIterator[InProcessServer]:
    """The keyed server's settings, in-process."""
    origins = allowed_origins(["http://good.example"], environ={})  # as --cors-origins gives them
    settings = Settings(api_key=KEY, cors_origins=origins, allowed_hosts=("heylook.test",))
    async with serve_in_process(tiny_models(tmp_path, tiny_model_dir), settings) as app:
        yield app


def assert_shape(response: httpx.Response, status: int) -> None:
    """The status, and the error in the shape of the API the path belongs to."""
    assert response.status_code == status, response.text
    body = response.json()
    if response.request.url.path.startswith("/api/"):
        assert isinstance(body["error"], str) and body["error"]
    else:
        assert body["error"]["message"] and body["error"]["type"]


# --- DNS rebinding: the Host ---------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/api/tags", "/v1/models"])
@pytest.mark.parametrize("host", ["evil.example", "evil.example:11434", "localhost.evil.example"])
async def test_an_unknown_host_is_refused(open_app: InProcessServer, path: str, host: str) -> None:
    assert_shape(await open_app.client.get(path, headers={"Host": host}), 403)


@pytest.mark.anyio
@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]:80", "heylook.localhost", "10.0.0.7"])
async def test_local_names_and_addresses_are_served(open_app: InProcessServer, host: str) -> None:
    assert (await open_app.client.get("/api/tags", headers={"Host": host})).status_code == 200


@pytest.mark.anyio
async def test_allowed_hosts_add_names(keyed_app: InProcessServer) -> None:
    headers = {"Host": "heylook.test", "Authorization": f"Bearer {KEY}"}
    assert (await keyed_app.client.get("/api/tags", headers=headers)).status_code == 200
    headers["Host"] = "other.test"
    assert (await keyed_app.client.get("/api/tags", headers=headers)).status_code == 403


# --- a page on another origin ----------------------------------------------------------------------

# What a page can make a browser send without a preflight: "simple" requests.
SIMPLE = {"Origin": "http://evil.example", "Content-Type": "text/plain;charset=UTF-8"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/copy", {"source": "tiny", "destination": "stolen"}),
        ("DELETE", "/api/delete", {"model": "tiny"}),
        ("POST", "/api/pull", {"model": "org/model"}),
        ("POST", "/api/chat", {"model": "tiny", "messages": HI, "stream": False}),
        ("POST", "/v1/chat/completions", {"model": "tiny", "messages": HI}),
    ],
)
async def test_cross_origin_simple_requests_do_nothing(open_app: InProcessServer, method, path, body) -> None:
    before = open_app.models.read_text()
    response = await open_app.client.request(method, path, content=json.dumps(body), headers=SIMPLE)
    assert_shape(response, 403)
    # Without the Origin (a page that hides it cannot), text/plain is still no JSON route's body.
    plain = {"Content-Type": "text/plain"}
    assert_shape(await open_app.client.request(method, path, content=json.dumps(body), headers=plain), 415)
    assert open_app.models.read_text() == before
    assert not open_app.provider.started


@pytest.mark.anyio
async def test_a_browser_form_post_is_refused_but_curl_is_not(open_app: InProcessServer) -> None:
    body = json.dumps({"model": "tiny"})
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    # curl -d sends a form content type: it works, as it does against Ollama.
    assert (await open_app.client.post("/api/show", content=body, headers=form)).status_code == 200
    from_a_page = {**form, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}
    assert_shape(await open_app.client.post("/api/show", content=body, headers=from_a_page), 415)


@pytest.mark.anyio
async def test_cors_answers_allowed_origins_only(keyed_app: InProcessServer) -> None:
    preflight = {
        "Origin": "http://good.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    allowed = await keyed_app.client.options("/v1/chat/completions", headers=preflight)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://good.example"
    assert "POST" in allowed.headers["access-control-allow-methods"]
    evil = await keyed_app.client.options(
        "/v1/chat/completions", headers={**preflight, "Origin": "http://evil.example"}
    )
    assert evil.status_code == 403 and "access-control-allow-origin" not in evil.headers
    headers = {"Origin": "http://good.example", "Authorization": f"Bearer {KEY}"}
    listed = await keyed_app.client.get("/v1/models", headers=headers)
    assert (
        listed.status_code == 200 and listed.headers["access-control-allow-origin"] == "http://good.example"
    )


def preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }


# Ollama's default (OLLAMA_ORIGINS unset): pages on this machine, on any port, and desktop apps'
# and editor extensions' own schemes.
LOCAL_PAGES = [
    "http://localhost:3000", "http://127.0.0.1:8080", "https://localhost", "http://0.0.0.0:5173",
    "http://localhost", "app://obsidian.md", "tauri://localhost", "vscode-webview://1a2b3c",
    "vscode-file://vscode-app", "file://",
]  # fmt: skip
FOREIGN_PAGES = [
    "https://evil.example", "http://localhost.evil.example", "http://localhost:3000.evil.example",
    "http://127.0.0.1.nip.io", "null", "chrome-extension://abcdefgh", "http://192.168.1.20:3000",
]  # fmt: skip


@pytest.mark.anyio
@pytest.mark.parametrize("origin", LOCAL_PAGES)
async def test_local_pages_and_apps_are_allowed_without_flags(open_app: InProcessServer, origin: str) -> None:
    asked = await open_app.client.options("/api/chat", headers=preflight(origin))
    assert asked.status_code == 200 and asked.headers["access-control-allow-origin"] == origin
    assert "POST" in asked.headers["access-control-allow-methods"]
    listed = await open_app.client.get("/api/tags", headers={"Origin": origin})
    assert listed.status_code == 200 and listed.headers["access-control-allow-origin"] == origin
    body = {"model": "tiny", "messages": HI, "stream": False}
    chat = await open_app.client.post("/api/chat", json=body, headers={"Origin": origin})
    assert chat.status_code == 200 and chat.json()["message"]["content"] == "Hello from heylook."


@pytest.mark.anyio
@pytest.mark.parametrize("origin", FOREIGN_PAGES)
async def test_other_origins_are_refused_without_flags(open_app: InProcessServer, origin: str) -> None:
    for path in ("/api/chat", "/v1/chat/completions"):
        asked = await open_app.client.options(path, headers=preflight(origin))
        assert_shape(asked, 403)
        assert "access-control-allow-origin" not in asked.headers
    body = {"model": "tiny", "messages": HI, "stream": False}
    chat = await open_app.client.post("/api/chat", json=body, headers={"Origin": origin})
    assert_shape(chat, 403)
    assert "--cors-origins" in chat.json()["error"]
    assert not open_app.provider.started


@pytest.mark.anyio
async def test_cors_origins_add_to_the_default(keyed_app: InProcessServer) -> None:
    for origin in ("http://good.example", "http://localhost:3000"):
        asked = await keyed_app.client.options("/v1/chat/completions", headers=preflight(origin))
        assert asked.status_code == 200 and asked.headers["access-control-allow-origin"] == origin


@pytest.mark.parametrize(
    ("environ", "added", "more"),
    [
        ({}, [], ()),
        ({}, ["https://chat.example"], ("https://chat.example",)),
        # $OLLAMA_ORIGINS as Ollama reads it: comma-separated, each adding to the default.
        ({"OLLAMA_ORIGINS": "https://a.example, https://*.b.example,"}, [], ("https://a.example", "https://*.b.example")),
        ({"OLLAMA_ORIGINS": "https://a.example"}, ["*"], ("https://a.example", "*")),
    ],
)  # fmt: skip
def test_allowed_origins_are_the_default_and_more(environ: dict, added: list, more: tuple) -> None:
    assert allowed_origins(added, environ) == (*DEFAULT_CORS_ORIGINS, *more)


def test_the_serve_command_adds_cors_origins_to_the_default(keyed_server: RunningServer) -> None:
    for origin in ("http://good.example", "http://localhost:3000", "vscode-webview://1a2b3c"):
        asked = httpx.options(f"{keyed_server.base_url}/v1/chat/completions", headers=preflight(origin))
        assert asked.status_code == 200 and asked.headers["access-control-allow-origin"] == origin
    refused = httpx.options(f"{keyed_server.base_url}/api/chat", headers=preflight("https://evil.example"))
    assert_shape(refused, 403)


# --- the API key -----------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/api/tags", "/v1/models", "/api/version", "/metrics"])
async def test_without_the_key_every_route_is_refused(keyed_app: InProcessServer, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"x-api-key": KEY[:-1]}, {"Authorization": KEY}):
        response = await keyed_app.client.get(path, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        if path != "/metrics":
            assert_shape(response, 401)


@pytest.mark.anyio
@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {KEY}"}, {"x-api-key": KEY}])
async def test_the_key_is_taken_as_bearer_or_x_api_key(keyed_app: InProcessServer, headers: dict) -> None:
    body = {"model": "tiny", "messages": HI, "max_tokens": 2}
    reply = await keyed_app.client.post("/v1/chat/completions", json=body, headers=headers)
    assert reply.status_code == 200
    assert reply.json()["choices"][0]["message"]["content"] == "Hello from "


@pytest.mark.anyio
async def test_probes_stay_open(keyed_app: InProcessServer) -> None:
    assert (await keyed_app.client.get("/")).status_code == 200
    assert (await keyed_app.client.get("/health")).status_code == 200


def test_the_clients_and_the_cli_send_the_key(keyed_server: RunningServer) -> None:
    import openai

    import ollama
    from tests.test_cli import heylook

    client = openai.OpenAI(base_url=f"{keyed_server.base_url}/v1", api_key=KEY, max_retries=0)
    assert client.chat.completions.create(model="tiny", messages=HI, max_tokens=2).choices
    native = ollama.Client(host=keyed_server.base_url, headers={"Authorization": f"Bearer {KEY}"})
    assert native.chat(model="tiny", messages=HI, options={"num_predict": 2}).done
    env = {"HEYLOOK_URL": keyed_server.base_url, "HEYLOOK_API_KEY": KEY}
    assert heylook("ps", env=env).returncode == 0
    ran = heylook("run", "tiny", "hi", "--max-new-tokens", "2", env=env)
    assert ran.returncode == 0, ran.stderr
    assert heylook("ps", env={"HEYLOOK_URL": keyed_server.base_url}).returncode == 1


# --- bad input: a 400 naming the field, never a 500 ---------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "raw", "param"),
    [
        ("/api/copy", '{"source": "tiny", "destination": "\\ud800"}', "destination"),
        ("/api/copy", '{"source": "tiny", "destination": "a\\u0085b"}', "destination"),
        ("/api/copy", '{"source": "tiny", "destination": "x\\ny"}', "destination"),
        ("/api/copy", '{"source": "tiny", "destination": "' + "n" * 200 + '"}', "destination"),
        ("/v1/chat/completions", '{"model": "tiny", "messages": [{"role": "user", "content": "\\udfff"}]}',
         "messages[0].content"),
        ("/api/generate", '{"model": "tiny", "prompt": "a\\ud800b"}', "prompt"),
        ("/v1/chat/completions", '{"model": "tiny", "messages": [], "temperature": NaN}', None),
        ("/api/chat", '{"model": "tiny", "messages": [], "options": {"temperature": Infinity}}', None),
        ("/v1/chat/completions", "[" * 10_000 + "]" * 10_000, None),
        ("/api/chat", '{"a": ' * 100 + "1" + "}" * 100, None),
    ],
)  # fmt: skip
async def test_malformed_text_and_structure_are_400s(open_app: InProcessServer, path, raw, param) -> None:
    before = open_app.models.read_text()
    response = await open_app.client.post(path, content=raw, headers={"Content-Type": "application/json"})
    assert_shape(response, 400)
    if param and not path.startswith("/api/"):
        assert response.json()["error"]["param"] == param
    assert open_app.models.read_text() == before
    assert not open_app.provider.started
    for route in ("/health", "/api/tags", "/v1/models"):
        assert (await open_app.client.get(route)).status_code == 200


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/v1/chat/completions", {"typical_p": 0}),
        ("/v1/chat/completions", {"repetition_penalty": 1e-320}),
        ("/v1/chat/completions", {"presence_penalty": 1e308}),
        ("/api/chat", {"options": {"repeat_penalty": 1e-320}}),
        ("/api/chat", {"options": {"frequency_penalty": -1e308}}),
        ("/api/chat", {"options": {"typical_p": 0}}),
        ("/api/generate", {"context": [-1]}),
    ],
)
async def test_numbers_out_of_range_are_400s(open_app: InProcessServer, path: str, fields: dict) -> None:
    body = {"model": "tiny", "stream": False, **fields}
    body |= {"prompt": "hi"} if path == "/api/generate" else {"messages": HI}
    assert_shape(await open_app.client.post(path, json=body), 400)
    assert not open_app.provider.started


def test_a_context_of_no_token_is_a_400(open_server: RunningServer) -> None:
    body = {"model": "tiny", "stream": False, "prompt": "hi", "context": [99999999]}
    response = httpx.post(f"{open_server.base_url}/api/generate", json=body, timeout=60)
    assert_shape(response, 400)
    assert "no token id" in response.json()["error"]


def test_a_tiny_temperature_is_greedy(open_server: RunningServer) -> None:
    body = {"model": "tiny", "messages": HI, "max_tokens": 4, "seed": 1}
    url = f"{open_server.base_url}/v1/chat/completions"
    tiny = httpx.post(url, json={**body, "temperature": 1e-300}, timeout=60)
    greedy = httpx.post(url, json={**body, "temperature": 0}, timeout=60)
    assert tiny.status_code == 200
    assert tiny.json()["choices"][0]["message"] == greedy.json()["choices"][0]["message"]


def test_a_huge_keep_alive_is_for_ever(open_server: RunningServer) -> None:
    body = {
        "model": "tiny",
        "prompt": "hi",
        "stream": False,
        "keep_alive": 1e300,
        "options": {"num_predict": 1},
    }
    assert httpx.post(f"{open_server.base_url}/api/generate", json=body, timeout=60).status_code == 200
    running = httpx.get(f"{open_server.base_url}/api/ps")
    assert running.status_code == 200
    [model] = running.json()["models"]
    assert model["expires_at"].startswith("23")  # Ollama's "for ever": ~292 years out


def test_the_token_cap_holds_for_a_client_that_asks_for_more(open_server: RunningServer) -> None:
    body = {"model": "tiny", "messages": HI, "max_tokens": 500, "ignore_eos": True}
    reply = httpx.post(f"{open_server.base_url}/v1/chat/completions", json=body, timeout=60).json()
    assert reply["usage"]["completion_tokens"] == 8 and reply["choices"][0]["finish_reason"] == "length"


# --- bodies that never end, routes that do not exist ------------------------------------------------------


def raw_exchange(server: RunningServer, request: bytes, wait: float) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        time.sleep(wait)
        chunks = []
        try:
            while data := sock.recv(65536):
                chunks.append(data)
        except TimeoutError:
            pass
        return b"".join(chunks)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
def test_a_body_that_never_finishes_times_out(open_server: RunningServer, path: str) -> None:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n"
    )
    answer = raw_exchange(open_server, (head + '{"model": "ti').encode(), wait=1.5)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert httpx.get(f"{open_server.base_url}/health").status_code == 200


def test_a_client_that_leaves_mid_body_is_not_an_error(open_server: RunningServer) -> None:
    before = open_server.output().count("Traceback")
    head = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{"
    with socket.create_connection(("127.0.0.1", open_server.port)) as sock:
        sock.sendall(head.encode())
    time.sleep(0.5)
    assert open_server.output().count("Traceback") == before
    metrics = httpx.get(f"{open_server.base_url}/metrics").text
    assert 'route="/v1/chat/completions",status="500"' not in metrics


def test_unknown_routes_leave_the_connection_usable(open_server: RunningServer) -> None:
    with httpx.Client(base_url=open_server.base_url) as client:
        for _ in range(40):
            missing = client.post("/api/nope", json={"model": "tiny", "padding": "x" * 5000})
            assert_shape(missing, 404)
            assert client.get("/health").status_code == 200


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/api/create"), ("POST", "/api/push"), ("POST", "/api/blobs/sha256:00")]
)
async def test_ollama_routes_not_built_yet_say_so(open_app: InProcessServer, method: str, path: str) -> None:
    response = await open_app.client.request(method, path, json={"model": "x"})
    assert_shape(response, 501)
    assert "not supported by heylook yet" in response.json()["error"]


# --- models.yaml -------------------------------------------------------------------------------------------


def test_an_emptied_models_yaml_keeps_the_last_good_registry(open_server: RunningServer) -> None:
    before = open_server.models.read_text()
    try:
        open_server.models.write_text("")
        time.sleep(2.5)
        assert "tiny:latest" in [
            m["name"] for m in httpx.get(f"{open_server.base_url}/api/tags").json()["models"]
        ]
        assert "empty" in open_server.output()
    finally:
        open_server.models.write_text(before)
