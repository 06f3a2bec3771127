"""The notebook client (``crater_hub.client``) against a small HTTP server played by the test:
what it sends (auth, paths, bodies, queries), how it reads answers and errors, waiting with a
deadline, and following a log stream line by line as the lines arrive.

The jobs REST API itself is tested against the real hub; here the test owns the server so it
can answer exactly what the contract allows and see exactly what the client asked.
"""

import json
import subprocess
import sys
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from crater_hub import client
from crater_hub.client import Client, CraterError, CraterTimeout, Job

TOKEN = "s3cret-token"


def job_model(id=7, state="queued", **more):
    """A job as the contract describes it."""
    return {
        "id": id, "owner": "ada", "name": "train", "profile": "gpu", "accelerator": "t4",
        "gpus": 1, "cpu": 2, "memory": "8Gi", "image": "python:3.11",
        "command": ["python", "-c", "print(1)"], "env": {"SEED": "1"}, "priority": "normal",
        "queue": "default", "state": state, "reason": None, "exit_code": None, "position": 1,
        "estimated_start": "2025-01-02T03:04:05Z", "submitted": "2025-01-02T03:00:00Z",
        "admitted": None, "started": None, "finished": None, "k8s_job": None,
        "transitions": [{"state": "queued", "reason": "submitted", "at": "2025-01-02T03:00:00Z"}],
        **more,
    }


class Hub:
    """A threaded HTTP server; ``routes[(method, path)]`` answers, ``seen`` records requests.

    A route returns ``(status, body)`` (a dict is sent as JSON, a str as text) or
    ``(status, iterator of str)`` for a chunked stream written piece by piece.
    """

    def __init__(self):
        self.routes = {}
        self.seen = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_one(self):
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                hub.seen.append({"method": self.command, "path": url.path,
                                 "query": parse_qs(url.query), "body": body,
                                 "headers": dict(self.headers)})
                route = hub.routes.get((self.command, url.path))
                status, answer = route(hub.seen[-1]) if route else (404, {"message": "no route"})
                if isinstance(answer, (dict, str, bytes)):
                    if isinstance(answer, dict):
                        data, kind = json.dumps(answer).encode(), "application/json"
                    else:
                        data = answer if isinstance(answer, bytes) else answer.encode()
                        kind = "text/plain; charset=utf-8"
                    self.send_response(status)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for piece in answer:
                    data = piece.encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

            do_GET = do_POST = do_DELETE = handle_one

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.api_url = f"http://127.0.0.1:{self.server.server_address[1]}/hub/api"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub(monkeypatch):
    with Hub() as hub:
        monkeypatch.setenv("JUPYTERHUB_API_URL", hub.api_url)
        monkeypatch.setenv("JUPYTERHUB_API_TOKEN", TOKEN)
        yield hub


def test_submit_sends_the_job_with_the_servers_token_and_reads_the_model(hub):
    hub.routes["POST", "/hub/api/crater/jobs"] = lambda req: (201, job_model(id=42))

    job = client.submit(["python", "train.py", 3], profile="gpu", accelerator="t4", gpus=1,
                        env={"SEED": 1}, priority="high", name="train", max_runtime=600,
                        workdir="/home/jovyan/run")

    sent = hub.seen[-1]
    assert sent["headers"]["Authorization"] == f"token {TOKEN}"
    assert sent["headers"]["Content-Type"] == "application/json"
    assert sent["body"] == {
        "command": ["python", "train.py", "3"], "profile": "gpu", "accelerator": "t4", "gpus": 1,
        "env": {"SEED": "1"}, "priority": "high", "name": "train", "max_runtime": 600,
        "workdir": "/home/jovyan/run"}
    assert isinstance(job, Job)
    assert (job.id, job.state, job.position, job.gpus) == (42, "queued", 1, 1)
    assert job.estimated_start == datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert job.started is None and job.duration is None and not job.done
    assert job.transitions[0].state == "queued" and job.transitions[0].reason == "submitted"


def test_submit_leaves_out_what_was_not_given_and_passes_a_shell_string_as_is(hub):
    hub.routes["POST", "/hub/api/crater/jobs"] = lambda req: (201, job_model())
    client.submit("echo hello && sleep 1", profile="cpu")
    assert hub.seen[-1]["body"] == {"command": "echo hello && sleep 1", "profile": "cpu", "gpus": 0}


def test_refusals_raise_with_the_hubs_status_and_message(hub):
    message = "gpus: 9 is more than the profile allows (1, 2, 4, 8)"
    hub.routes["POST", "/hub/api/crater/jobs"] = lambda req: (400, {"status": 400, "message": message})
    hub.routes["DELETE", "/hub/api/crater/jobs/3"] = lambda req: (409, {"message": "job 3 already succeeded"})
    hub.routes["GET", "/hub/api/crater/jobs/4"] = lambda req: (502, "<html>Bad gateway</html>")

    with pytest.raises(CraterError) as refused:
        client.submit(["true"], profile="gpu", accelerator="t4", gpus=9)
    assert (refused.value.status, refused.value.message) == (400, message)
    assert str(refused.value) == f"400: {message}"

    with pytest.raises(CraterError) as finished:
        client.cancel(3)
    assert (finished.value.status, finished.value.message) == (409, "job 3 already succeeded")

    with pytest.raises(CraterError) as proxy:  # not JSON: the body's text
        client.get(4)
    assert (proxy.value.status, proxy.value.message) == (502, "<html>Bad gateway</html>")

    with pytest.raises(CraterError) as unknown:  # the stub's own 404
        client.get(5)
    assert unknown.value.status == 404


def test_an_unreachable_hub_or_a_missing_token_say_so(hub, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_API_URL", "http://127.0.0.1:9/hub/api")  # discard: refused
    with pytest.raises(CraterError) as unreachable:
        client.get(1)
    assert unreachable.value.status is None
    assert "cannot reach the hub at http://127.0.0.1:9/hub/api/" in unreachable.value.message

    monkeypatch.delenv("JUPYTERHUB_API_TOKEN")
    with pytest.raises(CraterError, match="JUPYTERHUB_API_TOKEN is not set"):
        client.list()


def test_list_filters_by_state_and_asks_for_everyones_with_all(hub):
    jobs = [job_model(id=9, state="running"), job_model(id=8, state="queued")]
    hub.routes["GET", "/hub/api/crater/jobs"] = lambda req: (200, {"jobs": jobs})

    listed = client.list(state=["running", "queued"], all=True)
    assert [(j.id, j.state) for j in listed] == [(9, "running"), (8, "queued")]
    assert hub.seen[-1]["query"] == {"state": ["running", "queued"], "all": ["1"]}

    client.list("failed")
    assert hub.seen[-1]["query"] == {"state": ["failed"]}
    client.list()
    assert hub.seen[-1]["query"] == {}


def test_wait_polls_until_the_job_ends_and_returns_it_as_it_ended(hub):
    states = iter(["queued", "admitted", "running", "running"])

    def get(req):
        state = next(states, "failed")
        extra = {"exit_code": 3, "reason": "exit code 3",
                 "started": "2025-01-02T03:00:10Z", "finished": "2025-01-02T03:01:10Z"}
        return 200, job_model(id=5, state=state, **(extra if state == "failed" else {}))

    hub.routes["GET", "/hub/api/crater/jobs/5"] = get
    job = client.wait(5, timeout=30, poll=0.01)
    assert (job.state, job.exit_code, job.reason, job.done) == ("failed", 3, "exit code 3", True)
    assert job.duration == 60
    assert len(hub.seen) == 5


def test_wait_gives_up_at_its_deadline_with_the_job_as_last_seen(hub):
    hub.routes["GET", "/hub/api/crater/jobs/6"] = lambda req: (200, job_model(id=6, state="running"))
    with pytest.raises(CraterTimeout) as timeout:
        client.wait(6, timeout=0.2, poll=0.05)
    assert isinstance(timeout.value, TimeoutError)
    assert timeout.value.job.state == "running"
    assert "job 6 is still running after 0.2s" in str(timeout.value)
    assert len(hub.seen) >= 2  # it polled, then stopped at the deadline


def test_logs_tail_is_the_text_the_hub_sends(hub):
    hub.routes["GET", "/hub/api/crater/jobs/7/logs"] = lambda req: (200, "epoch 1\nepoch 2\n")
    assert client.logs(7, tail=2) == "epoch 1\nepoch 2\n"
    assert hub.seen[-1]["query"] == {"tail": ["2"]}
    client.logs(7)
    assert hub.seen[-1]["query"] == {}


def test_follow_yields_each_line_as_it_arrives_and_ends_with_the_stream(hub):
    got_first = threading.Event()

    def stream(req):
        def pieces():
            yield "step 1\n"
            # the next line is only written once the client has handed out the first one:
            # the client streams, it does not wait for the whole response
            assert got_first.wait(10), "the client did not yield the first line on its own"
            yield "step 2\nste"
            yield "p 3\n"
        return 200, pieces()

    hub.routes["GET", "/hub/api/crater/jobs/7/logs"] = stream
    lines = client.logs(7, follow=True)
    assert next(lines) == "step 1"
    got_first.set()
    assert list(lines) == ["step 2", "step 3"]
    assert hub.seen[-1]["query"] == {"follow": ["1"]}


def test_job_methods_use_the_client_that_returned_the_job(hub):
    hub.routes["POST", "/hub/api/crater/jobs"] = lambda req: (201, job_model(id=11))
    hub.routes["DELETE", "/hub/api/crater/jobs/11"] = lambda req: (
        200, job_model(id=11, state="cancelled", reason="cancelled by ada"))
    hub.routes["GET", "/hub/api/crater/jobs/11/events"] = lambda req: (200, {"events": [
        {"type": "Normal", "reason": "Scheduled", "message": "on node t4-0",
         "at": "2025-01-02T03:00:01Z", "object": "Pod/crater-job-11-abc"}]})
    other = Client(api_url=hub.api_url, token="another-token")

    job = other.submit(["sleep", "600"], profile="cpu")
    assert job.events()[0]["reason"] == "Scheduled"
    cancelled = job.cancel()
    assert (cancelled.state, cancelled.reason, cancelled.done) == ("cancelled", "cancelled by ada", True)
    assert {r["headers"]["Authorization"] for r in hub.seen} == {"token another-token"}


def test_unknown_fields_from_a_newer_hub_are_kept_not_fatal(hub):
    hub.routes["GET", "/hub/api/crater/jobs/12"] = lambda req: (200, job_model(id=12, node="t4-0"))
    job = client.get(12)
    assert job.extra == {"node": "t4-0"}


def test_importing_the_client_pulls_in_no_hub_side_dependencies():
    heavy = ("traitlets", "jupyterhub", "tornado", "kubernetes_asyncio", "kubespawner", "yaml",
             "requests", "sqlalchemy")
    code = ("import sys, crater_hub.client; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
