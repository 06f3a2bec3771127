"""Pods the GPU tests ask localkube for: one GPU on a named node, its utilization pinned."""

#: localkube's annotation that fixes the utilization its DCGM exporter reports for a pod's GPUs
PIN = "localkube.crater.io/gpu-utilization"


def gpu_pod(name, node, resource="nvidia.com/gpu", command=("sleep", "300"), pin=None):
    return {
        "metadata": {"name": name, "annotations": {PIN: pin} if pin else {}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "work", "image": "busybox:1.36", "command": list(command),
                            "resources": {"limits": {resource: "1"}}}],
        },
    }
