"""Cluster files become Node objects that real clients accept; mistakes name the bad key."""

import json

import pytest
import yaml
from kubernetes_asyncio import client

from crater_hub.localkube.devices import DEVICES_ANNOTATION
from crater_hub.localkube.nodes import nodes_from_cluster_spec
from tests.localkube.helpers import DEMO


def demo_nodes():
    return {
        n["metadata"]["name"]: n for n in nodes_from_cluster_spec(yaml.safe_load(DEMO.read_text()))
    }


def test_demo_cluster_has_two_gpu_models_and_a_cpu_node():
    nodes = demo_nodes()
    assert sorted(nodes) == ["cpu-0", "gpu-a100-0", "gpu-t4-0"]
    a100, t4, cpu = nodes["gpu-a100-0"], nodes["gpu-t4-0"], nodes["cpu-0"]
    assert a100["status"]["allocatable"] == {
        "cpu": "64",
        "memory": "512Gi",
        "nvidia.com/gpu": "4",
        "pods": "110",
    }
    assert a100["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
    assert a100["metadata"]["labels"]["nvidia.com/gpu.memory"] == "81920"
    assert a100["metadata"]["labels"]["nvidia.com/gpu.count"] == "4"
    assert t4["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-Tesla-T4"
    assert t4["status"]["capacity"]["nvidia.com/gpu"] == "8"
    assert "nvidia.com/gpu" not in cpu["status"]["capacity"]
    for node in nodes.values():
        labels = node["metadata"]["labels"]
        assert labels["kubernetes.io/hostname"] == node["metadata"]["name"]
        assert labels["kubernetes.io/os"] == "linux" and labels["kubernetes.io/arch"]
        assert not node["spec"].get("taints")  # KubeSpawner pods carry no GPU tolerations
        ready = {c["type"]: c for c in node["status"]["conditions"]}["Ready"]
        assert (
            ready["status"] == "True" and ready["lastHeartbeatTime"] and ready["lastTransitionTime"]
        )
        assert {"type": "InternalIP", "address": "127.0.0.1"} in node["status"]["addresses"]
        assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.31.0-localkube"


async def test_kubernetes_asyncio_accepts_the_nodes():
    """Client-side validation requires every V1NodeSystemInfo field, among others."""
    api = client.ApiClient()
    try:

        class Response:
            data = json.dumps(
                {
                    "kind": "NodeList",
                    "apiVersion": "v1",
                    "metadata": {},
                    "items": list(demo_nodes().values()),
                }
            )

        nodes = api.deserialize(Response(), "V1NodeList")
    finally:
        await api.close()
    a100 = {n.metadata.name: n for n in nodes.items}["gpu-a100-0"]
    assert a100.status.allocatable["nvidia.com/gpu"] == "4"
    assert a100.status.node_info.os_image and a100.status.node_info.machine_id


def test_full_entry_taints_allocatable_devices_and_defaults():
    (node,) = nodes_from_cluster_spec(
        {
            "nodes": [
                {
                    "name": "mig-0",
                    "capacity": {
                        "cpu": 8,
                        "memory": "32Gi",
                        "nvidia.com/mig-1g.10gb": 7,
                        "pods": 20,
                    },
                    "allocatable": {"cpu": "7500m"},
                    "labels": {"team": "ml", "gpu.count": 7, "fast": True},
                    "taints": [
                        {"key": "dedicated", "value": "ml", "effect": "NoSchedule"},
                        {"key": "x", "effect": "NoExecute"},
                    ],
                    "unschedulable": True,
                    "instanceType": "dgx",
                    "arch": "arm64",
                    "devices": {
                        "nvidia.com/mig-1g.10gb": {
                            "env": "CUDA_VISIBLE_DEVICES",
                            "ids": [f"0:{i}" for i in range(7, 14)],
                        }
                    },
                }
            ]
        }
    )
    assert node["status"]["allocatable"] == {
        "cpu": "7500m",
        "memory": "32Gi",
        "nvidia.com/mig-1g.10gb": "7",
        "pods": "20",
    }
    assert (
        node["metadata"]["labels"]["gpu.count"] == "7"
        and node["metadata"]["labels"]["fast"] == "true"
    )
    assert node["metadata"]["labels"]["node.kubernetes.io/instance-type"] == "dgx"
    assert (
        node["metadata"]["labels"]["kubernetes.io/arch"]
        == node["status"]["nodeInfo"]["architecture"]
        == "arm64"
    )
    assert node["spec"]["unschedulable"] is True
    assert node["spec"]["taints"][0] == {"key": "dedicated", "value": "ml", "effect": "NoSchedule"}
    assert node["spec"]["taints"][1]["timeAdded"]
    devices = json.loads(node["metadata"]["annotations"][DEVICES_ANNOTATION])
    assert devices == {
        "nvidia.com/mig-1g.10gb": {
            "env": "CUDA_VISIBLE_DEVICES",
            "ids": [f"0:{i}" for i in range(7, 14)],
        }
    }


def node(**overrides):
    entry = {"name": "n0", "capacity": {"cpu": 4, "memory": "8Gi"}}
    entry.update(overrides)
    return {"nodes": [entry]}


@pytest.mark.parametrize(
    "spec, message",
    [
        ({}, "nodes: required"),
        ({"nodes": []}, "nodes: required"),
        ({"nodes": [], "node": []}, "unknown key 'node'"),
        (node(name="Bad_Name"), r"nodes\[0\]\.name"),
        (node(capacity={"memory": "1Gi"}), r"nodes\[0\]\.capacity\.cpu: required"),
        (
            node(capacity={"cpu": "four", "memory": "1Gi"}),
            r"nodes\[0\]\.capacity\.cpu: invalid quantity 'four'",
        ),
        (
            node(capacity={"cpu": 1, "memory": "1Gi", "nvidia.com/gpu": "1.5"}),
            r"capacity\.nvidia\.com/gpu: .*whole",
        ),
        (node(capacity={"cpu": -1, "memory": "1Gi"}), r"capacity\.cpu: must not be negative"),
        (node(allocatable={"cpu": 8}), r"allocatable\.cpu: 8 exceeds capacity 4"),
        (
            node(allocatable={"nvidia.com/gpu": 1}),
            r"allocatable\.nvidia\.com/gpu: not in the node's capacity",
        ),
        (node(gpus=2), r"nodes\[0\]\.gpus: unknown key"),
        (node(labels=["a"]), r"nodes\[0\]\.labels: expected a mapping"),
        (node(labels={"a": {"b": 1}}), r"nodes\[0\]\.labels\.a: expected a string"),
        (
            node(taints=[{"key": "k", "effect": "Sometimes"}]),
            r"taints\[0\]\.effect: must be one of",
        ),
        (node(taints=[{"value": "v", "effect": "NoSchedule"}]), r"taints\[0\]\.key: required"),
        (
            node(taints=[{"key": "k", "effect": "NoSchedule", "operator": "Equal"}]),
            r"taints\[0\]\.operator: unknown key",
        ),
        (
            node(devices={"nvidia.com/gpu": {"env": "X"}}),
            r"devices\.nvidia\.com/gpu: the node has no nvidia\.com/gpu",
        ),
        (node(devices={"cpu": {}}), r"devices\.cpu: not an extended resource"),
        (
            node(
                capacity={"cpu": 1, "memory": "1Gi", "amd.com/gpu": 2},
                devices={"amd.com/gpu": {"ids": ["a"]}},
            ),
            r"devices\.amd\.com/gpu\.ids: 1 ids for 2 allocatable",
        ),
        (
            node(
                capacity={"cpu": 1, "memory": "1Gi", "amd.com/gpu": 2},
                devices={"amd.com/gpu": {"ids": ["a", "a"]}},
            ),
            r"ids: device ids must be distinct",
        ),
        (
            node(
                capacity={"cpu": 1, "memory": "1Gi", "amd.com/gpu": 2},
                devices={"amd.com/gpu": {"env": "1X"}},
            ),
            r"devices\.amd\.com/gpu\.env: expected an environment variable name",
        ),
        (
            {
                "nodes": [
                    {"name": "a", "capacity": {"cpu": 1, "memory": 1}},
                    {"name": "a", "capacity": {"cpu": 1, "memory": 1}},
                ]
            },
            r"nodes\[1\]\.name: duplicate node name 'a'",
        ),
    ],
)
def test_mistakes_name_the_bad_key(spec, message):
    with pytest.raises(ValueError, match=message):
        nodes_from_cluster_spec(spec)
