"""Workers written against Cloudflare's Python Workers API (`from workers import ...`, wrangler.jsonc)
run unchanged on our `wrangler dev`, started from their own folder as Cloudflare's own tests start
theirs (`dev --port P`, wait for `[wrangler:info] Ready on`). Our fixtures use the same API
surface as Cloudflare's examples; the assertions are on the same behaviour: exact bodies,
statuses and content types."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES
from tests.polling import wait_until

pytestmark = pytest.mark.slow


def get(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, method=method, data=body)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers.items())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers.items())


def start(dev_process: Any, tmp_path: Path, folder: str, *args: str) -> str:
    dev = dev_process("--port", "0", "--persist-to", str(tmp_path / folder), *args, cwd=FIXTURES / folder)
    return dev.ready_url.rstrip("/")


def test_a_fetch_handler_module_with_a_jsonc_config(dev_process, tmp_path: Path) -> None:
    url = start(dev_process, tmp_path, "cf_hello")
    status, body, headers = get(url)
    assert (status, body, headers["content-type"]) == (200, "Hello from a Python Worker", "text/plain;charset=UTF-8")
    status, body, headers = get(url + "/json")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"greeting": "Hello from a Python Worker", "method": "GET"}
    status, body, headers = get(url, "POST", b"quiet please")
    assert (status, body, headers["x-echo"]) == (201, "QUIET PLEASE!", "yes")


def test_a_worker_entrypoint_with_a_durable_object_and_cloudflare_names(dev_process, tmp_path: Path) -> None:
    url = start(dev_process, tmp_path, "cf_objects")
    assert get(url + "/room-1/show")[:2] == (200, "No notes")
    assert get(url + "/room-1/add/hi")[:2] == (200, "1 notes")
    assert get(url + "/room-1/add/there")[:2] == (200, "2 notes")
    assert get(url + "/room-1/show")[:2] == (200, "hi\nthere")
    assert get(url + "/room-2/show")[:2] == (200, "No notes")
    assert json.loads(get(url + "/room-1/alarm")[1]) == {"alarm": 4102444800000}
    assert json.loads(get(url + "/room-1/same")[1]) == {"same": True, "unique": 64}
    assert get(url + "/room-1/forget")[:2] == (200, "forgotten")
    assert get(url + "/room-1/show")[:2] == (200, "No notes")
    assert json.loads(get(url + "/room-1/alarm")[1]) == {"alarm": None}  # deleteAll takes the alarm too
    assert get(url + "/")[:2] == (400, "which list?")


def test_form_data_and_blobs_in_both_directions(dev_process, tmp_path: Path) -> None:
    import email.parser
    import email.policy

    import requests

    url = start(dev_process, tmp_path, "cf_hello")
    posted = requests.post(url + "/upload", data={"title": "lamp", "tag": ["a", "b"]},
                           files={"photo": ("lamp.txt", b"a lamp", "text/plain")}, timeout=30)
    assert posted.status_code == 200
    assert posted.json() == {"fields": [["title", "lamp"], ["tag", "a"], ["tag", "b"],
                                        ["photo", {"name": "lamp.txt", "type": "text/plain", "text": "a lamp"}]]}
    urlencoded = requests.post(url + "/upload", data={"q": "a b&c"}, timeout=30)
    assert urlencoded.json() == {"fields": [["q", "a b&c"]]}
    not_a_form = requests.post(url + "/upload", data=b"plain", headers={"content-type": "text/plain"}, timeout=30)
    assert not_a_form.status_code == 500  # form_data() raised in the handler: an uncaught error, as workerd

    answer = requests.get(url + "/form", timeout=30)
    assert answer.headers["content-type"].startswith("multipart/form-data; boundary=")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + answer.headers["content-type"].encode() + b"\r\n\r\n" + answer.content)
    parts = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
    assert parts["field"].get_content() == "value"
    report = parts["report"]
    assert report.get_filename() == "report.csv" and report.get_content_type() == "text/csv"
    assert report.get_payload(decode=True) == b"id,total\n1,9.99\n"


def test_cron_triggers_run_scheduled_on_demand_and_are_tail_events(dev_process, tmp_path: Path) -> None:
    dev = dev_process("--port", "0", "--persist-to", str(tmp_path / "cron"), "--test-scheduled",
                      cwd=FIXTURES / "cf_cron")
    url = dev.ready_url.rstrip("/")
    assert json.loads(get(url)[1]) == {"runs": []}
    status, body, _ = get(url + "/__scheduled?cron=*/5+*+*+*+*")
    assert (status, body) == (200, "Ran scheduled event")
    runs = json.loads(get(url)[1])["runs"]
    assert len(runs) == 1 and runs[0]["cron"] == "*/5 * * * *" and runs[0]["scheduledTime"] > 1.7e12
    dev.wait_for_output("scheduled run for */5 * * * *")  # the handler's print reaches the console


def test_without_test_scheduled_only_the_cdn_cgi_route_runs_it(dev_process, tmp_path: Path) -> None:
    url = start(dev_process, tmp_path, "cf_cron")
    status, body, _ = get(url + "/__scheduled?cron=*+*+*+*+*")
    assert status == 200 and json.loads(body) == {"runs": []}  # fetch() answered: nothing ran
    status, body, _ = get(url + "/cdn-cgi/handler/scheduled?cron=*+*+*+*+*&time=1795000000000")
    assert (status, body) == (200, "ok")  # as wrangler dev answers it, with or without the flag
    assert json.loads(get(url)[1])["runs"] == [{"cron": "* * * * *", "scheduledTime": 1795000000000}]


async def test_each_scheduled_run_is_a_tail_event_with_its_logs(tmp_path: Path) -> None:
    from durable import config as wconfig
    from durable.observe.tail import TailFilters
    from durable.runtime import Runtime

    runtime = Runtime([wconfig.load(FIXTURES / "cf_cron" / "wrangler.jsonc")], persist_to=tmp_path / "state")
    await runtime.start()
    try:
        tail = runtime.hub.create("cf-cron", TailFilters())
        assert await runtime.workers["cf-cron"].scheduled("*/5 * * * *", 1_795_000_000_000) == "ok"
        event = tail.queue.get_nowait()
        assert event["scriptName"] == "cf-cron" and event["outcome"] == "ok"
        assert event["event"] == {"cron": "*/5 * * * *", "scheduledTime": 1_795_000_000_000}
        assert [log["message"] for log in event["logs"]] == [["scheduled run for */5 * * * *"]]
    finally:
        await runtime.close()


def test_a_kv_binding_and_javascript_style_responses_survive_a_restart(dev_process, tmp_path: Path) -> None:
    url = start(dev_process, tmp_path, "cf_kv")
    status, body, headers = get(url)
    assert (status, body, headers["content-type"]) == (200, "baz", "text/plain;charset=UTF-8")
    assert get(url + "/colour-sky", "PUT", b"blue")[:2] == (201, "stored")
    assert get(url + "/colour-grass", "PUT", b"green")[:2] == (201, "stored")
    assert get(url + "/all")[1] == "colour-grass,colour-sky"
    again = start(dev_process, tmp_path, "cf_kv")  # a second session on the same state reads the same store
    assert get(again + "/all")[1] == "colour-grass,colour-sky"


def test_a_fastapi_app_behind_asgi_fetch_sees_the_env(dev_process, tmp_path: Path) -> None:
    url = start(dev_process, tmp_path, "cf_fastapi")
    status, body, headers = get(url)
    assert (status, body, headers["content-type"]) == (200, '{"message":"FastAPI behind asgi.fetch"}',
                                                       "application/json")
    assert get(url + "/hi/Ada")[1] == '{"message":"Hi Ada!"}'
    assert get(url + "/env")[1] == '{"message":"MESSAGE is from the worker\'s vars"}'
    assert get(url + "/nowhere")[0] == 404


async def test_a_chat_room_on_hibernatable_websockets(tmp_path: Path) -> None:
    """Two real WebSocket clients: history on join, broadcast to both, and after the object is
    evicted (hibernation) a fresh instance gets the next message with both sockets still held."""
    import aiohttp

    from durable import config as wconfig
    from durable.runtime import Runtime
    from durable.server import Server, bind

    runtime = Runtime([wconfig.load(FIXTURES / "cf_chat" / "wrangler.jsonc")], persist_to=tmp_path / "state")
    await runtime.start()
    server = Server(runtime.workers["cf-chat"], bind("127.0.0.1", 0))
    await server.start()
    ws_url = server.url.replace("http://", "ws://") + "/room/lobby"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(server.url + "/room/lobby") as resp:
                assert resp.status == 400 and await resp.text() == "Expected WebSocket upgrade"
            ann = await http.ws_connect(ws_url)
            assert (await ann.receive_json(timeout=10)) == {"type": "history", "messages": []}
            await ann.send_json({"username": "ann", "text": "hello"})
            first = await ann.receive_json(timeout=10)
            assert first["text"] == "hello" and first["listeners"] == 1

            bob = await http.ws_connect(ws_url)
            history = await bob.receive_json(timeout=10)
            assert [m["text"] for m in history["messages"]] == ["hello"]

            host = runtime.workers["cf-chat"].hosts["Room"]
            assert host.evict_idle(0) == 1  # hibernate: the instance goes, the sockets stay
            await ann.send_str("ping")
            assert await ann.receive_str(timeout=10) == "pong"
            assert host.evict_idle(0) == 0  # the runtime answered the ping: nothing woke up
            await bob.send_json({"username": "bob", "text": "still there?"})
            to_ann, to_bob = await ann.receive_json(timeout=10), await bob.receive_json(timeout=10)
            assert to_ann == to_bob and to_ann["text"] == "still there?" and to_ann["listeners"] == 2
            assert to_ann["instance"] != first["instance"]  # a new instance woke up for it

            carl = await http.ws_connect(ws_url, max_msg_size=0)
            await carl.receive_json(timeout=10)
            await carl.send_str("x" * (1024 * 1024 + 1))  # over Cloudflare's 1 MiB: webSocketError
            closing = await carl.receive(timeout=10)
            assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1009
            error = await ann.receive_json(timeout=10)
            assert error["type"] == "error" and "limit" in error["message"] and error["listeners"] == 2
            assert await bob.receive_json(timeout=10) == error

            await bob.close()
            assert (await ann.receive_json(timeout=10)) == {"type": "left", "listeners": 1}
            await ann.send_json({"username": "ann", "text": "bye"})
            assert (await ann.receive_json(timeout=10))["listeners"] == 1
            await ann.close()
    finally:
        await server.stop()
        await runtime.close()


def test_sql_writes_answered_before_a_kill_9_are_there_after_it(dev_process, tmp_path: Path) -> None:
    dev = dev_process("--port", "0", "--persist-to", str(tmp_path / "sql"), cwd=FIXTURES / "cf_sql")
    url = dev.ready_url.rstrip("/")
    answers = [json.loads(get(url + f"/books/add/alice/{n}")[1]) for n in range(1, 6)]
    assert answers[-1] == {"balance": 15, "entries": 5}
    dev.proc.kill()  # SIGKILL: no shutdown, no flush
    dev.proc.wait(timeout=10)
    again = dev_process("--port", "0", "--persist-to", str(tmp_path / "sql"), cwd=FIXTURES / "cf_sql")
    status, body, _ = get(again.ready_url.rstrip("/") + "/books/balance/alice")
    assert (status, json.loads(body)) == (200, {"balance": 15, "entries": 5})


def test_pywrangler_dev_as_cloudflare_s_example_tests_start_it(tmp_path: Path) -> None:
    """Cloudflare's examples' own tests run `pywrangler dev --port P` in the example's folder and
    wait for `[wrangler:info] Ready on`; the same command starts our runtime."""
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = Path(sys.executable).parent / "pywrangler"
    process = subprocess.Popen([str(command), "dev", "--port", str(port), "--persist-to", str(tmp_path / "s")],
                               cwd=FIXTURES / "cf_hello", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "[wrangler:info] Ready on" in line:
                break
        else:
            raise AssertionError("pywrangler dev ended without 'Ready on'")
        status, body, headers = get(f"http://localhost:{port}")
        assert (status, body, headers["content-type"]) == (200, "Hello from a Python Worker", "text/plain;charset=UTF-8")
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_d1_migrations_and_queries_from_the_cli_and_the_worker(dev_process, tmp_path: Path) -> None:
    """`wrangler d1` and `wrangler dev` share one local database: migrations applied once, a
    worker's reads, writes and an atomic batch, and the CLI reading what the worker wrote."""
    folder, state = FIXTURES / "cf_d1", tmp_path / "cf_d1"

    def d1(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "wrangler", "d1", *args, "--local", "--persist-to", str(state)],
                              cwd=folder, capture_output=True, text=True, timeout=60)
    listed = d1("migrations", "list", "notes")
    assert listed.returncode == 0 and listed.stdout.split() == ["0001_create_notes.sql", "0002_seed.sql"], listed
    applied = d1("migrations", "apply", "notes")
    assert applied.returncode == 0 and "0002_seed.sql" in applied.stdout, applied
    assert "No migrations to apply" in d1("migrations", "apply", "notes").stdout  # each once
    url = start(dev_process, tmp_path, "cf_d1")
    status, body, headers = get(url)
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"first": {"author": "Ada", "body": "first; with a semicolon"}, "authors": ["Ada"]}
    assert json.loads(get(url + "/add?author=Cy&body=hello")[1]) == {"id": 2, "changes": 1}
    status, body, _ = get(url + "/pair")
    assert status == 409 and body.startswith("D1_ERROR: NOT NULL constraint failed"), body
    assert get(url + "/count")[1] == "2"  # the batch's first insert was rolled back with it
    assert json.loads(get(url + "/raw")[1]) == [["author", "body"], ["Ada", "first; with a semicolon"], ["Cy", "hello"]]
    read = d1("execute", "notes", "--command", "SELECT author FROM notes ORDER BY id", "--json")
    assert [row["author"] for row in json.loads(read.stdout)[0]["results"]] == ["Ada", "Cy"], read
    refused = d1("execute", "notes", "--command", "SELECT * FROM nowhere")
    assert refused.returncode == 1 and "D1_ERROR: no such table: nowhere" in refused.stderr


def test_static_assets_before_the_worker_with_pretty_urls_etags_and_a_404_page(dev_process, tmp_path: Path) -> None:
    url = start(dev_process, tmp_path, "cf_assets")
    status, body, headers = get(url + "/")
    assert (status, headers["content-type"]) == (200, "text/html; charset=utf-8") and "Home" in body
    assert get(url + "/style.css")[2]["content-type"] == "text/css; charset=utf-8"
    assert "About" in get(url + "/about")[1] and "Docs" in get(url + "/docs/")[1]
    etag = get(url + "/style.css")[2]["etag"]
    request = urllib.request.Request(url + "/style.css", headers={"If-None-Match": etag})
    with pytest.raises(urllib.error.HTTPError) as not_modified:
        urllib.request.urlopen(request, timeout=30)
    assert not_modified.value.code == 304
    # run_worker_first: /api/* goes to the worker, but not what a "!" pattern leaves to the assets
    assert json.loads(get(url + "/api/items")[1])["from"] == "worker"
    assert json.loads(get(url + "/api/static/data.json")[1]) == {"static": True}
    status, body, _ = get(url + "/docs/missing")  # no file: the worker, whose ASSETS answers the 404 page
    assert status == 404 and "Not here" in body
    assert get(url + "/../wrangler.jsonc")[0] == 404


def test_a_wsgi_app_behind_wsgi_fetch_with_module_level_env_and_run_sync(dev_process, tmp_path: Path) -> None:
    url = start(dev_process, tmp_path, "cf_wsgi")
    request = urllib.request.Request(url + "/echo/x%20y?a=1&b=2", data=b"payload", method="POST",
                                     headers={"X-Agent": "tests", "Content-Type": "text/plain"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 201 and resp.headers["x-served-by"] == "wsgi"
        assert json.loads(resp.read()) == {"method": "POST", "path": "/echo/x y", "query": "a=1&b=2", "agent": "tests",
                                           "body": "payload", "greeting": "Hello from WSGI"}
    path = json.loads(get(url + "/caf%C3%A9")[1])["path"]  # PEP 3333: the path's bytes as latin-1
    assert path.encode("latin-1").decode("utf-8") == "/café"
    assert json.loads(get(url + "/kv", "PUT", b"kept")[1]) == {"note": "kept"}
    assert json.loads(get(url + "/kv")[1]) == {"note": "kept"}


def test_a_workflow_killed_mid_run_finishes_after_the_restart_without_repeating_a_step(dev_process,
                                                                                         tmp_path: Path) -> None:
    """kill -9 while the workflow waits between two steps: after a restart on the same state its
    alarm fires again, the run is replayed, and the stored first step is not run again."""
    log = tmp_path / "steps.log"

    def serve() -> Any:
        return dev_process("--port", "0", "--persist-to", str(tmp_path / "state"), cwd=FIXTURES / "cf_workflows")
    dev = serve()
    url = dev.ready_url.rstrip("/")
    instance_id = get(f"{url}/start?kind=logged&nap_ms=300&log={log}")[1]

    def status() -> dict[str, Any]:
        return json.loads(get(f"{url}/status/{instance_id}")[1])
    assert wait_until(lambda: status()["status"] == "waiting", 20), status()  # step one is stored by now
    dev.kill9()
    url = serve().ready_url.rstrip("/")
    assert get(f"{url}/event/{instance_id}?type=go")[0] == 200
    assert wait_until(lambda: status()["status"] == "complete", 30), status()
    assert status() == {"status": "complete", "output": "finished"}
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["one", "two"]
