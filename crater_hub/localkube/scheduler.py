"""The scheduler: binds pending pods to nodes the way kube-scheduler's default profile does.

For each pod without a node it runs kube-scheduler's filters in their order — NodeUnschedulable,
TaintToleration, NodeAffinity (nodeSelector and required node affinity), NodeResourcesFit
(requests against allocatable minus what non-terminal pods bound there request, pods being
deleted included) — scores the nodes that pass by least allocation, and binds to the best (ties
by name). Binding, device assignment (:mod:`.devices`) and the ``PodScheduled`` condition are one
store write, so the kubelet never sees a bound pod without its devices.

When nothing fits, the pod stays Pending with ``PodScheduled=False/Unschedulable`` and a
``FailedScheduling`` event worded as kube-scheduler's ``FitError``. It is retried only when
capacity may have appeared (a bound pod finished or went away, a node was added or changed), not
on a timer.
"""

import json

from crater_hub.quantity import parse_quantity

from . import devices, events
from .controller import Controller
from .store import isotime

PODS = ("", "pods")
NODES = ("", "nodes")
SCHEDULER_NAME = "default-scheduler"
TERMINAL = ("Succeeded", "Failed")

UNSCHEDULABLE = "node(s) were unschedulable"
AFFINITY = "node(s) didn't match Pod's node affinity/selector"
TOO_MANY_PODS = "Too many pods"
NOT_HELPFUL = "Preemption is not helpful for scheduling"
NO_VICTIMS = "No preemption victims found for incoming pod"


def _bound_and_running(pod):
    return (
        bool(pod and pod.get("spec", {}).get("nodeName"))
        and pod.get("status", {}).get("phase") not in TERMINAL
    )


def _wants_scheduling(pod):
    spec = pod.get("spec", {})
    return (
        not spec.get("nodeName")
        and spec.get("schedulerName", SCHEDULER_NAME) == SCHEDULER_NAME
        and not pod["metadata"].get("deletionTimestamp")
        and pod.get("status", {}).get("phase", "Pending") == "Pending"
    )


def tolerates(tolerations, taint):
    """Whether any toleration matches ``taint`` (key, value and effect, as the API defines)."""
    for t in tolerations or []:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        operator = t.get("operator") or "Equal"
        if not t.get("key"):
            if operator == "Exists":
                return True
            continue
        if t["key"] != taint.get("key"):
            continue
        if operator == "Exists" or (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _expression_matches(expr, value, present):
    op, values = expr.get("operator"), expr.get("values") or []
    if op == "In":
        return present and value in values
    if op == "NotIn":
        return not present or value not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and len(values) == 1:
        try:
            have, limit = int(value), int(values[0])
        except ValueError:
            return False
        return have > limit if op == "Gt" else have < limit
    return False


def _term_matches(term, node):
    """A nodeSelectorTerm: all its requirements hold. An empty term matches no node."""
    exprs, fields = term.get("matchExpressions") or [], term.get("matchFields") or []
    if not exprs and not fields:
        return False
    labels = node["metadata"].get("labels") or {}
    for expr in exprs:
        key = expr.get("key")
        if not _expression_matches(expr, labels.get(key), key in labels):
            return False
    for expr in fields:
        if expr.get("key") != "metadata.name" or not _expression_matches(
            expr, node["metadata"]["name"], True
        ):
            return False
    return True


def matches_node_selector_and_affinity(pod, node):
    """nodeSelector (every label equal) and required node affinity (any term)."""
    spec = pod.get("spec", {})
    labels = node["metadata"].get("labels") or {}
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if required is None:
        return True
    return any(_term_matches(term, node) for term in required.get("nodeSelectorTerms") or [])


class NodeState:
    """A node and what the pods bound to it take, for one scheduling decision."""

    def __init__(self, node):
        self.node = node
        self.name = node["metadata"]["name"]
        self.allocatable = {
            k: parse_quantity(v) for k, v in node.get("status", {}).get("allocatable", {}).items()
        }
        self.requested = {}
        self.scored = {}  # requests with kube-scheduler's non-zero defaults, for scoring
        self.pods = []

    def add(self, pod):
        self.pods.append(pod)
        for k, v in devices.pod_requests(pod).items():
            self.requested[k] = self.requested.get(k, 0) + v
        for k, v in devices.pod_requests(pod, non_zero=True).items():
            self.scored[k] = self.scored.get(k, 0) + v

    def filter(self, pod, request):
        """(reasons, resolvable): why ``pod`` cannot go here (empty when it can).

        ``resolvable`` is whether preempting other pods could help (only resource shortages).
        """
        spec = pod.get("spec", {})
        tolerations = spec.get("tolerations")
        if self.node.get("spec", {}).get("unschedulable") and not tolerates(
            tolerations, {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
        ):
            return [UNSCHEDULABLE], False
        for taint in self.node.get("spec", {}).get("taints") or []:
            if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(
                tolerations, taint
            ):
                return [
                    f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value') or ''}}}"
                ], False
        if not matches_node_selector_and_affinity(pod, self.node):
            return [AFFINITY], False
        reasons = []
        if len(self.pods) + 1 > self.allocatable.get("pods", 0):
            reasons.append(TOO_MANY_PODS)
        for resource, amount in sorted(request.items()):
            if amount > 0 and amount > self.allocatable.get(resource, 0) - self.requested.get(
                resource, 0
            ):
                reasons.append(f"Insufficient {resource}")
        return reasons, True

    def score(self, pod):
        """LeastAllocated over cpu and memory, 0..100: emptier nodes first, as kube-scheduler."""
        want = devices.pod_requests(pod, non_zero=True)
        scores = []
        for resource in ("cpu", "memory"):
            capacity = self.allocatable.get(resource, 0)
            used = self.scored.get(resource, 0) + want.get(resource, 0)
            scores.append(
                0 if capacity <= 0 or used > capacity else (capacity - used) * 100 / capacity
            )
        return sum(scores) / len(scores)


def fit_error_message(node_count, failures):
    """kube-scheduler's FitError text: reason histograms sorted as strings, then preemption's.

    ``failures``: ``{node: (reasons, resolvable)}`` for every node that did not fit.
    """
    if node_count == 0:
        return "no nodes available to schedule pods"
    reasons, preemption = {}, {}
    for node_reasons, resolvable in failures.values():
        for reason in node_reasons:
            reasons[reason] = reasons.get(reason, 0) + 1
        why = NO_VICTIMS if resolvable else NOT_HELPFUL
        preemption[why] = preemption.get(why, 0) + 1

    def histogram(counts):
        return ", ".join(sorted(f"{n} {reason}" for reason, n in counts.items()))

    return (
        f"0/{node_count} nodes are available: {histogram(reasons)}. "
        f"preemption: 0/{node_count} nodes are available: {histogram(preemption)}."
    )


def _set_condition(pod, condition):
    """Set a pod condition, keeping lastTransitionTime when its status does not change."""
    conditions = pod.setdefault("status", {}).setdefault("conditions", [])
    for i, old in enumerate(conditions):
        if old.get("type") == condition["type"]:
            if old.get("status") == condition["status"]:
                condition["lastTransitionTime"] = old.get("lastTransitionTime")
            conditions[i] = condition
            return
    conditions.append(condition)


class Scheduler(Controller):
    """Binds pods whose ``schedulerName`` is ``default-scheduler``; see the module docstring."""

    watches = (PODS, NODES)

    def __init__(self, cluster):
        super().__init__(cluster)
        self._waiting = {}  # key of an unschedulable pod -> its queue order (priority, age)
        self._messages = {}  # pod uid -> the last FailedScheduling message recorded

    def keys_for(self, change):
        if change.skey == NODES:
            return [] if change.type == "DELETED" else self._retry_waiting()
        if change.skey != PODS:
            return []
        pod, meta = change.obj, change.obj["metadata"]
        key = (PODS, meta.get("namespace"), meta["name"])
        if change.type == "DELETED":
            self._waiting.pop(key, None)
            self._messages.pop(meta["uid"], None)
            return self._retry_waiting() if _bound_and_running(change.old) else []
        if _wants_scheduling(pod):
            return [key]
        self._waiting.pop(key, None)
        if _bound_and_running(change.old) and not _bound_and_running(pod):
            return self._retry_waiting()
        return []

    def _retry_waiting(self):
        """Every unschedulable pod, highest priority then oldest first (the scheduling queue's order)."""
        return [key for key, _ in sorted(self._waiting.items(), key=lambda kv: kv[1])]

    async def reconcile(self, key):
        _, namespace, name = key
        pods_res = self.res("", "pods")
        pod = self.store.find(pods_res, namespace, name)
        if pod is None or not _wants_scheduling(pod):
            self._waiting.pop(key, None)
            return None
        if pod["spec"].get("schedulingGates"):
            self._mark_unschedulable(
                pod, "SchedulingGated", "Scheduling is blocked due to non-empty scheduling gates"
            )
            return None
        nodes = {
            n["metadata"]["name"]: NodeState(n) for n in self.store.iter_raw(self.res("", "nodes"))
        }
        for other in self.store.iter_raw(pods_res):
            state = nodes.get(other.get("spec", {}).get("nodeName"))
            if state is not None and _bound_and_running(other):
                state.add(other)
        request = devices.pod_requests(pod)
        failures, feasible = {}, []
        for node_name in sorted(nodes):
            state = nodes[node_name]
            reasons, resolvable = state.filter(pod, request)
            if reasons:
                failures[node_name] = (reasons, resolvable)
            else:
                feasible.append(state)
        for state in sorted(feasible, key=lambda s: (-s.score(pod), s.name)):
            assigned = devices.assign(state.node, pod, state.pods)
            if assigned is not None:
                self._bind(pod, state.name, assigned)
                self._waiting.pop(key, None)
                return None
            # Counts fit but ids do not (a pod bound without the scheduler holds devices unrecorded).
            failures[state.name] = (
                [f"Insufficient {r}" for r in sorted(request) if devices.is_device_resource(r)],
                True,
            )
        spec, meta = pod["spec"], pod["metadata"]
        self._waiting[key] = (
            -(spec.get("priority") or 0),
            meta["creationTimestamp"],
            namespace,
            name,
        )
        self._mark_unschedulable(pod, "Unschedulable", fit_error_message(len(nodes), failures))
        return None

    def _bind(self, pod, node_name, assigned):
        meta = pod["metadata"]

        def bind(p):
            p["spec"]["nodeName"] = node_name
            if assigned:
                p["metadata"].setdefault("annotations", {})[devices.DEVICES_ANNOTATION] = (
                    json.dumps(assigned)
                )
            _set_condition(
                p,
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": isotime(),
                },
            )

        bound = self.store.mutate(self.res("", "pods"), meta["namespace"], meta["name"], bind)
        self._messages.pop(meta["uid"], None)
        if bound is not None:
            events.record(
                self.store,
                bound,
                "Scheduled",
                f"Successfully assigned {meta['namespace']}/{meta['name']} to {node_name}",
                component=SCHEDULER_NAME,
            )

    def _mark_unschedulable(self, pod, reason, message):
        """PodScheduled=False with ``reason``; a FailedScheduling event when the message is new."""
        meta = pod["metadata"]

        def mark(p):
            _set_condition(
                p,
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": reason,
                    "message": message,
                    "lastProbeTime": None,
                    "lastTransitionTime": isotime(),
                },
            )

        updated = self.store.mutate(
            self.res("", "pods"), meta["namespace"], meta["name"], mark, subresource="status"
        )
        if (
            reason == "Unschedulable"
            and updated is not None
            and self._messages.get(meta["uid"]) != message
        ):
            self._messages[meta["uid"]] = message
            events.record(
                self.store,
                updated,
                "FailedScheduling",
                message,
                type_="Warning",
                component=SCHEDULER_NAME,
            )
