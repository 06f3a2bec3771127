"""A job's timeline in the order things happened, though Kubernetes stamps its events to the
second and the hub its transitions to the millisecond (what the job page's Events table shows)."""

from crater_hub.queue.timeline import kube_event_key, ordered, transition_key


def transition(state, at):
    return {"reason": state, "at": at}


def kube(reason, at, version):
    return {"reason": reason, "at": at, "metadata": {"resourceVersion": str(version)}}


def test_one_busy_second_reads_in_the_order_it_happened():
    # as the events API received them: the cache's order, transitions first
    events = [transition("queued", "2026-12-05T22:46:45.329Z"),
              transition("admitted", "2026-12-05T22:46:45.350Z"),
              transition("running", "2026-12-05T22:46:45.404Z"),
              transition("succeeded", "2026-12-05T22:46:46.930Z"),
              kube("Created", "2026-12-05T22:46:45Z", 104),
              kube("Pulled", "2026-12-05T22:46:45Z", 103),
              kube("Started", "2026-12-05T22:46:45Z", 105),
              kube("Scheduled", "2026-12-05T22:46:45Z", 102),
              kube("SuccessfulCreate", "2026-12-05T22:46:45Z", 101),
              kube("Completed", "2026-12-05T22:46:46Z", 106)]
    keyed = [(transition_key(e) if "metadata" not in e else kube_event_key(e["at"], e), e)
             for e in events]
    assert [e["reason"] for e in ordered(keyed)] == [
        "queued", "admitted", "SuccessfulCreate", "Scheduled", "Pulled", "Created", "Started",
        "running", "Completed", "succeeded"]


def test_a_cancel_comes_before_the_kill_it_causes_and_seconds_still_order_first():
    events = [transition("cancelled", "2026-12-05T22:50:00.900Z"),
              kube("Killing", "2026-12-05T22:50:00Z", 300),
              kube("Started", "2026-12-05T22:49:59Z", 299),
              transition("running", "2026-12-05T22:49:59.990Z")]
    keyed = [(transition_key(e) if "metadata" not in e else kube_event_key(e["at"], e), e)
             for e in events]
    assert [e["reason"] for e in ordered(keyed)] == ["Started", "running", "cancelled", "Killing"]
