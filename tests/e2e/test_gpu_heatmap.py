"""The GPU heatmap API, the node load view and the GPU series of /hub/metrics on the real hub with
the demo profiles, on localkube's demo cluster: a user's T4 server and another team's pod holding
an A100 (in a namespace the hub does not manage) are named with owner and workload, as the user
and as the admin sees them."""

import re

from ..helpers import wait_for
from .hub import api_request, request, spawn

T4 = {"profile": "gpu", "accelerator": "t4"}


def metric(text, name, **labels):
    """The value of one sample of ``name`` with exactly ``labels`` in exposition text, or None."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = ",".join(sorted(p for p in re.findall(r'\w+="[^"]*"', m.group(2) or "")))
        if got == want:
            return float(m.group(3))
    return None


async def metrics_text(hub):
    from tornado.httpclient import AsyncHTTPClient

    r = await AsyncHTTPClient().fetch(f"{hub.url}/hub/metrics", raise_error=False,
                                      headers={"Authorization": f"token {hub.admin_token}"})
    assert r.code == 200, r.code
    return r.body.decode()


async def token_of(hub, user):
    r = await api_request(hub, f"users/{user}/tokens", "POST", {"note": "gpu heatmap test"})
    assert r.code == 201, r
    return r.data["token"]


def held(answer):
    return [d for d in answer["devices"] if d["holders"]]


async def test_every_held_gpu_names_its_owner_and_workload(crater_hub, make_crater_user, core):
    hub = crater_hub
    user = await make_crater_user("heat")
    before = await metrics_text(hub)
    refused_before = metric(before, "crater_spawn_refusals_total", reason="options") or 0

    await spawn(hub, user, {**T4, "gpus": 1})
    await core.create_namespace({"metadata": {"name": "research"}})
    try:
        await core.create_namespaced_pod("research", {
            "metadata": {"name": "trainer", "labels": {"app": "trainer"}},
            "spec": {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
                     "containers": [{"name": "main", "image": "busybox:1.36",
                                     "command": ["sh", "-c", "sleep 3600"],
                                     "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
                     "terminationGracePeriodSeconds": 0}})

        async def both_held():
            r = await api_request(hub, "crater/gpus")
            assert r.code == 200, r
            return r.data if len(held(r.data)) == 2 else None

        answer = await wait_for(both_held, timeout=30, interval=0.2,
                                message="the server's T4 and the trainer's A100 to show as held")
        by_acc = {d["accelerator"]: d for d in held(answer)}
        t4, a100 = by_acc["t4"], by_acc["a100"]
        assert t4["node"] == "gpu-t4-0" and a100["node"] == "gpu-a100-0"
        assert t4["owner"] == user  # links are absolute paths: this hub's base URL is "/"
        assert t4["workload"] == {"kind": "server", "name": "", "link": f"/user/{user}/"}
        assert t4["holders"][0]["placement"] == "device"  # localkube records the device ids
        assert a100["owner"] == "external"
        assert a100["workload"] == {"kind": "external", "name": "trainer", "link": None}
        # every device of both nodes is on the page, held or free
        assert len([d for d in answer["devices"] if d["node"] == "gpu-t4-0"]) == 8
        summary = {a["slug"]: a for a in answer["accelerators"]}
        assert summary["t4"]["allocated"] == 1 and summary["t4"]["allocated_by_kind"] == {"server": 1}
        assert summary["t4"]["queued_gpus"] == 0
        # this hub has no Prometheus: allocation, and a note saying why there is no utilization
        if not answer["utilization"]["available"]:
            assert answer["utilization"]["note"].startswith("utilization unavailable: ")
            assert t4["utilization"] is None and not t4["idle"]

        # the user sees the same with names (the default visibility), filtered to one node
        token = await token_of(hub, user)
        r = await request(f"{hub.api_url}crater/gpus?node=t4&accelerator=t4", token=token)
        assert r.code == 200, r
        assert {d["node"] for d in r.data["devices"]} == {"gpu-t4-0"}
        assert [d["owner"] for d in held(r.data)] == ["you"]

        # bad filters name the field
        for query, field in (("accelerator=h100", "accelerator"), ("idle=perhaps", "idle"),
                             ("limit=0", "limit"), ("node=a%2Fb", "node")):
            r = await request(f"{hub.api_url}crater/gpus?{query}", token=token)
            assert r.code == 400 and field in r.data["message"], (query, r)

        # the node load view: admins only, every pod classified with what it holds
        r = await request(f"{hub.api_url}crater/nodes", token=token)
        assert r.code == 403, r
        r = await api_request(hub, "crater/nodes?node=gpu-&kind=external")
        assert r.code == 200, r
        assert [n["name"] for n in r.data["nodes"]] == ["gpu-a100-0"]
        [trainer] = [p for p in r.data["nodes"][0]["pods"] if p["name"] == "trainer"]
        assert trainer["kind"] == "external" and trainer["holds"]["nvidia.com/gpu"] == 1
        r = await api_request(hub, "crater/nodes?node=gpu-t4-0")
        [server] = [p for p in r.data["nodes"][0]["pods"] if p["kind"] == "server"]
        assert server["user"] == user and server["link"] == f"/user/{user}/"
        assert server["holds"]["nvidia.com/gpu"] == 1
        r = await api_request(hub, "crater/nodes?kind=robot")
        assert r.code == 400 and "kind" in r.data["message"]

        # /hub/metrics: GPUs allocated by accelerator and kind; refusals by reason
        async def allocated():
            text = await metrics_text(hub)
            ok = (metric(text, "crater_gpus_allocated", accelerator="t4", kind="server") == 1
                  and metric(text, "crater_gpus_allocated", accelerator="a100", kind="external") == 1)
            return text if ok else None

        text = await wait_for(allocated, timeout=30, interval=0.5, message="GPU series on /hub/metrics")
        assert metric(text, "crater_gpus_idle_allocated", accelerator="t4") is not None
        r = await api_request(hub, f"users/{user}/servers/other", "POST",
                              {"user_options": {"profile": "gpu", "accelerator": "nope"}})
        assert r.code == 400, r
        after = await metrics_text(hub)
        assert metric(after, "crater_spawn_refusals_total", reason="options") == refused_before + 1

        # queued demand: a 4 × A100 job cannot start (the trainer holds one A100; the user's
        # quota of 4 GPUs is partly used by the server): its GPUs wait in the queue
        r = await api_request(hub, "crater/jobs", "POST", {
            "profile": "gpu", "accelerator": "a100", "gpus": 4, "command": "sleep 60",
            "name": "waits"}, token=token)
        assert r.code == 201, r
        job_id = r.data["id"]
        try:
            async def queued():
                r = await api_request(hub, "crater/gpus")
                a100 = next(a for a in r.data["accelerators"] if a["slug"] == "a100")
                return a100["queued_gpus"] == 4

            await wait_for(queued, timeout=30, interval=0.2, message="4 A100s queued")
        finally:
            await api_request(hub, f"crater/jobs/{job_id}", "DELETE", token=token)
    finally:
        await core.delete_namespace("research")

    async def released():
        r = await api_request(hub, "crater/gpus?accelerator=a100")
        return not held(r.data)

    await wait_for(released, timeout=30, interval=0.2, message="the trainer's A100 to be free again")


async def test_the_page_needs_a_login_and_says_what_it_shows(crater_hub):
    from tornado.httpclient import AsyncHTTPClient

    r = await AsyncHTTPClient().fetch(f"{crater_hub.url}/hub/crater/gpus", raise_error=False,
                                      follow_redirects=False)
    assert r.code == 302 and "/hub/login" in r.headers["Location"]
