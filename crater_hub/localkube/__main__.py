"""``python -m crater_hub.localkube``: run the embedded Kubernetes until interrupted."""

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from .app import LocalKube


def parser():
    p = argparse.ArgumentParser(
        prog="crater-hub localkube",
        description="An embedded Kubernetes API (scheduler, process kubelet, Job and RayCluster "
        "controllers) for "
        "running crater_hub and its tests without a cluster.",
    )
    p.add_argument("--cluster", metavar="FILE", help="cluster file (YAML nodes); default: the demo cluster")
    p.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--kubeconfig", metavar="PATH", help="write a kubeconfig for this cluster here")
    p.add_argument("--state-dir", metavar="DIR", help="pod sandboxes, logs and volume data (default: a temporary directory)")
    p.add_argument("--history", type=int, default=10000, help="watch history size (older versions get 410)")
    p.add_argument("--images", metavar="FILE", help="image table (YAML); default: the built-in one")
    p.add_argument("--isolation", choices=("isolated", "loopback"),
                   help="pods in namespaces of their own on a bridge (default as root; needs root) or "
                   "host processes on loopback addresses (default otherwise); env LOCALKUBE_ISOLATION")
    p.add_argument("--pod-cidr", help="isolated: the pods' range (default: a free /22 in 100.64.0.0/10)")
    p.add_argument("--service-cidr", help="the Services' range (default: a free /24 next to the pods')")
    p.add_argument("--mask", action="append", default=[], metavar="DIR",
                   help="isolated: a host directory pods may not see (repeatable; the state dir always is)")
    p.add_argument("--share", action="append", default=[], metavar="DIR",
                   help="isolated: a host directory every pod sees as it is, read-write (repeatable; "
                   "for tests that hand files to pods)")
    p.add_argument("--kuberay-crd", action="store_true",
                   help="serve ray.io/v1 RayClusters from the start (a schema-less CRD), as if KubeRay were installed")
    p.add_argument("--log-level", default="INFO")
    return p


async def serve(args):
    lk = LocalKube(cluster_file=args.cluster, state_dir=args.state_dir, host=args.host,
                   port=args.port, history_size=args.history, image_table=args.images,
                   isolation=args.isolation, pod_cidr=args.pod_cidr, service_cidr=args.service_cidr,
                   masked_paths=args.mask, shared_paths=args.share, kuberay_crd=args.kuberay_crd)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await lk.start()
    if args.kubeconfig:
        lk.write_kubeconfig(Path(args.kubeconfig))
    print(f"localkube: API at {lk.url}" + (f", kubeconfig {args.kubeconfig}" if args.kubeconfig else ""), flush=True)
    try:
        await stop.wait()
    finally:
        await lk.stop()


def main(argv=None):
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="[%(levelname).1s %(asctime)s localkube] %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
