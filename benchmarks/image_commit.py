"""Commit + push time of a server with 50 MiB of changes (issue 13's note).

``--backend containerd`` (as root; Debian's containerd, runc, busybox-static, docker-registry): a
containerd of its own under a temporary directory, the real registry on 127.0.0.1, a busybox base
image pushed and pulled, a container that writes ``--mib`` MiB of random data (incompressible: the
worst case for the gzip of the layer), then the commit program the commit Job runs
(``python -m crater_hub.images.containerd_commit``), timed from its start to its exit, with the
time of each phase from its progress lines. Each round uses a fresh container, so every push
uploads a new layer. Baseline in the same run: uploading a blob of the same size with the same
registry client (the floor of the push phase), and a plain copy of the data (``cp``).

    .venv/bin/python benchmarks/image_commit.py --backend containerd [--mib 50] [--rounds 3]

The localkube backend (the embedded default) is measured by the images e2e path; this script
does not start a hub.
"""

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crater_hub.images.local_registry import PULL_USER, PUSH_USER, LocalRegistry  # noqa: E402
from crater_hub.images.registry import RegistryClient, sha256_file  # noqa: E402
from tests.images.busybox_image import push_busybox  # noqa: E402
from tests.images.containerd_node import ContainerdNode  # noqa: E402


def commit_once(node, registry, auth, container, tag):
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "crater_hub.images.containerd_commit", "--address", node.socket,
         "--container-id", f"containerd://{container}", "--registry-url", registry.url,
         "--repository", "crater/bench/commit", "--tag", tag, "--auth-file", auth],
        stdout=subprocess.PIPE, text=True)
    marks, result = {}, None
    for line in proc.stdout:
        event = json.loads(line)
        if "phase" in event:
            marks[event["phase"]] = time.perf_counter() - start
        elif "sizes" in event:
            marks["diff_done"] = time.perf_counter() - start
        elif "result" in event:
            result = event["result"]
    assert proc.wait() == 0 and result, "the commit failed"
    total = time.perf_counter() - start
    return {"total": total, "diff": marks["diff_done"] - marks["committing"],
            "push": total - marks["pushing"], "layer": result["layer_size"], "changes": result["changes_size"]}


async def upload_baseline(registry, path):
    client = RegistryClient(registry.url, PUSH_USER, registry.credentials()[PUSH_USER])
    digest, size = sha256_file(path)
    start = time.perf_counter()
    await client.push_blob_file("crater/bench/baseline", path, digest, size)
    return time.perf_counter() - start


def run_containerd(args):
    work = Path(tempfile.mkdtemp(prefix="crater-bench-commit-"))
    registry = LocalRegistry(work / "registry").start()
    node = ContainerdNode(work / "containerd").start()
    try:
        client = RegistryClient(registry.url, PUSH_USER, registry.credentials()[PUSH_USER])
        asyncio.run(push_busybox(client, "crater/bench/base", "base"))
        base = f"{registry.host}/crater/bench/base:base"
        node.pull(base, PULL_USER, registry.credentials()[PULL_USER])
        raw = f"{PUSH_USER}:{registry.credentials()[PUSH_USER]}".encode()
        auth = work / "auth.json"
        auth.write_text(json.dumps({"auths": {registry.host: {"auth": base64.b64encode(raw).decode()}}}))
        rounds, baselines, copies = [], [], []
        for i in range(args.rounds):
            name = f"bench-{i}"
            node.run(base, name, "/bin/sleep", "3600")
            try:
                node.exec(name, "/bin/dd", "if=/dev/urandom", "of=/data.bin", "bs=1048576", f"count={args.mib}")
                rounds.append(commit_once(node, registry, str(auth), name, f"r{i}"))
            finally:
                node.remove(name)
            blob = work / f"blob-{i}"
            with open(blob, "wb") as f:
                f.write(os.urandom(args.mib << 20))
            start = time.perf_counter()
            subprocess.run(["cp", str(blob), str(blob) + ".copy"], check=True)
            copies.append(time.perf_counter() - start)
            baselines.append(asyncio.run(upload_baseline(registry, blob)))
            for p in (blob, Path(str(blob) + ".copy")):
                p.unlink()
    finally:
        node.stop()
        registry.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)

    def med(key):
        return statistics.median(r[key] for r in rounds)
    upload, copy = statistics.median(baselines), statistics.median(copies)
    print(f"containerd commit + push of {args.mib} MiB of random changes, {args.rounds} rounds (medians)")
    print(f"  layer: {rounds[0]['changes'] / 2**20:.1f} MiB uncompressed, {rounds[0]['layer'] / 2**20:.1f} MiB gzip")
    print(f"  total (program start to exit):      {med('total'):7.2f} s")
    print(f"  committing (ctr snapshots diff):    {med('diff'):7.2f} s")
    print(f"  pushing (base layer, layer, config, manifest): {med('push'):7.2f} s")
    print(f"  baseline: upload of a {args.mib} MiB blob, same client: {upload:7.2f} s  (push / baseline: "
          f"{med('push') / upload:.2f})")
    print(f"  baseline: cp of {args.mib} MiB: {copy:7.3f} s  (total / cp: {med('total') / copy:.0f})")
    print("  rounds:", json.dumps([{k: round(v, 3) for k, v in r.items()} for r in rounds]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["containerd"], default="containerd")
    parser.add_argument("--mib", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    run_containerd(args)


if __name__ == "__main__":
    main()
