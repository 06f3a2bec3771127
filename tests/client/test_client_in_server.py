"""The notebook client where researchers use it: in a kernel of their single-user server, spawned
on localkube by the real hub, authenticated only by the server's own JUPYTERHUB_API_TOKEN."""

import asyncio
import json
import textwrap
import uuid

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from ..e2e.hub import request, spawn

RUN_DEADLINE_S = 180


async def run_in_kernel(hub, user, code, timeout):
    """Run ``code`` in a new kernel of ``user``'s server; its stdout, or AssertionError with
    the traceback. Reached through the proxy as a browser would, with the admin token."""
    server = f"{hub.url}/user/{user}/api/"
    r = await request(server + "kernels", "POST", {"name": "python3"}, token=hub.admin_token)
    assert r.code == 201, r
    kernel = r.data["id"]
    ws = await websocket_connect(HTTPRequest(
        server.replace("http", "ws", 1) + f"kernels/{kernel}/channels",
        headers={"Authorization": f"token {hub.admin_token}"}))
    msg_id, out, error = uuid.uuid4().hex, [], None
    try:
        ws.write_message(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": uuid.uuid4().hex,
                       "username": user, "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
        }))

        async def until_idle():
            nonlocal error
            while True:
                raw = await ws.read_message()
                assert raw is not None, "the kernel's channel closed"
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "stream":
                    out.append(content["text"])
                elif kind == "error":
                    error = "\n".join(content["traceback"])
                elif kind == "status" and content["execution_state"] == "idle":
                    return

        await asyncio.wait_for(until_idle(), timeout)
    finally:
        ws.close()
        await request(server + f"kernels/{kernel}", "DELETE", token=hub.admin_token)
    assert error is None, f"the code failed in the kernel:\n{error}\noutput: {''.join(out)}"
    return "".join(out)


NOTEBOOK = textwrap.dedent("""
    import json, os
    from crater_hub import client

    assert "JUPYTERHUB_API_TOKEN" in os.environ  # the server's own token, nothing else
    job = client.submit(["python", "-c", "print('hello from a crater job')"], profile="cpu",
                        name="from-notebook")
    done = client.wait(job.id, timeout={timeout}, poll=1)
    mine = [j.id for j in client.list()]
    try:
        client.cancel(done.id)
        refused = None
    except client.CraterError as e:
        refused = [e.status, e.message]
    print(json.dumps({{"id": job.id, "owner": done.owner, "state": done.state,
                      "exit_code": done.exit_code, "logs": client.logs(done.id),
                      "listed": done.id in mine, "cancel_finished": refused}}))
""")


async def test_a_notebook_submits_a_job_and_waits_for_it_with_its_servers_token(
        crater_hub, make_crater_user):
    user = await make_crater_user("notebook")
    await spawn(crater_hub, user, {"profile": "cpu"})
    printed = await run_in_kernel(crater_hub, user, NOTEBOOK.format(timeout=RUN_DEADLINE_S - 30),
                                  timeout=RUN_DEADLINE_S)
    result = json.loads(printed.strip().splitlines()[-1])
    assert result["owner"] == user
    assert (result["state"], result["exit_code"]) == ("succeeded", 0), result
    assert "hello from a crater job" in result["logs"]
    assert result["listed"]
    assert result["cancel_finished"][0] == 409, result


PROFILES = textwrap.dedent("""
    import json
    from crater_hub import client
    offer = client.profiles()
    print(json.dumps([p["slug"] for p in offer["profiles"]]))
""")


async def test_the_servers_token_may_use_the_crater_api(crater_hub, make_crater_user):
    """setup(c) adds custom:crater:use to what server tokens ask for; without it, 403."""
    user = await make_crater_user("notebook")
    await spawn(crater_hub, user, {"profile": "cpu"})
    printed = await run_in_kernel(crater_hub, user, PROFILES, timeout=60)
    assert json.loads(printed.strip().splitlines()[-1]) == ["cpu", "gpu"]
