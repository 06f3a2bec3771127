"""How Workload conditions and Kueue's pending-workloads answers read as our job states (data)."""

from crater_hub.queue import kueue


def workload(*conditions, admission=None, owner="crater-job-7"):
    wl = {"metadata": {"name": f"job-{owner}-1a2b3",
                       "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
                                            "name": owner, "uid": "u"}]},
          "status": {"conditions": [{"type": t, "status": s, "reason": r, "message": m}
                                    for t, s, r, m in conditions]}}
    if admission:
        wl["status"]["admission"] = admission
    return wl


def test_no_workload_yet_is_no_verdict():
    assert kueue.verdict(None) is None


def test_pending_workload_is_queued_with_kueues_message():
    found = kueue.verdict(workload(("QuotaReserved", "False", "Pending",
                                    "insufficient unused quota for nvidia.com/gpu in flavor a100")))
    assert found == kueue.Verdict("queued", "insufficient unused quota for nvidia.com/gpu in flavor a100")
    assert kueue.verdict(workload()).state == "queued"


def test_quota_reserved_but_not_admitted_waits_for_admission_checks():
    found = kueue.verdict(workload(("QuotaReserved", "True", "QuotaReserved", "")))
    assert found.state == "queued" and "admission checks" in found.reason


def test_admitted_names_the_cluster_queue():
    found = kueue.verdict(workload(("QuotaReserved", "True", "QuotaReserved", ""),
                                   ("Admitted", "True", "Admitted", ""),
                                   admission={"clusterQueue": "gpus"}))
    assert found == kueue.Verdict("admitted", "admitted by Kueue in ClusterQueue gpus")


def test_evicted_is_preemption_with_the_preempted_conditions_words():
    found = kueue.verdict(workload(
        ("QuotaReserved", "False", "Pending", "Preempted ..."),
        ("Evicted", "True", "Preempted", "Preempted to accommodate a workload"),
        ("Preempted", "True", "InClusterQueue", "Preempted to accommodate a workload (UID: 1)")))
    assert found == kueue.Verdict("evicted", "InClusterQueue: Preempted to accommodate a workload (UID: 1)")
    found = kueue.verdict(workload(("Evicted", "True", "PodsReadyTimeout", "")))
    assert found == kueue.Verdict("evicted", "PodsReadyTimeout")


def test_readmitted_after_eviction_is_admitted_again():
    found = kueue.verdict(workload(("QuotaReserved", "True", "QuotaReserved", ""),
                                   ("Admitted", "True", "Admitted", ""),
                                   ("Evicted", "False", "QuotaReserved", "Previously: Preempted")))
    assert found.state == "admitted"


def test_finished_wins():
    found = kueue.verdict(workload(("Admitted", "True", "Admitted", ""),
                                   ("Finished", "True", "Succeeded", "Job finished successfully")))
    assert found == kueue.Verdict("finished", "Job finished successfully")


def test_positions_are_one_based_by_owning_job():
    summary = {"kind": "PendingWorkloadsSummary", "items": [
        {**workload(owner="crater-job-1"), "positionInLocalQueue": 0},
        {**workload(owner="crater-job-2-r1"), "positionInLocalQueue": 4},
        {"metadata": {"name": "orphan"}, "positionInLocalQueue": 1},
    ]}
    assert kueue.positions(summary) == {"crater-job-1": 1, "crater-job-2-r1": 5}
    assert kueue.positions(None) == {} and kueue.positions({"items": None}) == {}


def test_the_visibility_path_is_kueues():
    assert kueue.pending_workloads_path("ns", "lq") == \
        "/apis/visibility.kueue.x-k8s.io/v1beta2/namespaces/ns/localqueues/lq/pendingworkloads"


def test_an_eviction_between_two_looks_is_still_seen():
    from datetime import datetime

    admitted_at = datetime(2026, 12, 1, 10, 0, 0)
    readmitted = workload(("QuotaReserved", "True", "QuotaReserved", ""),
                          ("Admitted", "True", "Admitted", ""),
                          ("Evicted", "False", "QuotaReserved", "Previously: Preempted to make room"))
    readmitted["status"]["conditions"][2]["lastTransitionTime"] = "2026-12-01T10:05:00Z"
    found = kueue.evicted_since(readmitted, admitted_at)
    assert found == kueue.Verdict("evicted", "QuotaReserved: Previously: Preempted to make room")
    # an eviction before the hub saw it admitted is history, not a preemption of this run
    readmitted["status"]["conditions"][2]["lastTransitionTime"] = "2026-12-01T09:55:00Z"
    assert kueue.evicted_since(readmitted, admitted_at) is None
    evicted_now = workload(("Evicted", "True", "Preempted", "for a higher priority job"))
    assert kueue.evicted_since(evicted_now, admitted_at).state == "evicted"
    assert kueue.evicted_since(None, admitted_at) is None
