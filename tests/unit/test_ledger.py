"""The quota ledger as data: servers and jobs counted together, a reservation is checked and
recorded in one call, best-effort jobs and the servers limit count only where they should."""

from traitlets.config import Config

from crater_hub.accelerators import Accelerator
from crater_hub.config import Crater
from crater_hub.policy import quotas
from crater_hub.policy.ledger import JOB, SERVER, Holding, Ledger

T4 = Accelerator("t4", "Tesla T4", "nvidia.com/gpu")
A100 = Accelerator("a100", "A100", "nvidia.com/gpu")
QUOTA = quotas.Quota(servers=2, gpus=4, accelerators={"a100": 1})


def test_servers_and_jobs_count_together_and_release_gives_back():
    ledger = Ledger()
    assert ledger.reserve("ada", (JOB, 1), Holding(JOB, T4, 3), QUOTA) is None
    why = ledger.reserve("ada", (SERVER, ""), Holding(SERVER, T4, 2), QUOTA)
    assert why == "2 more GPUs would exceed your GPU quota: 3 of 4 in use, 1 left"
    assert not ledger.holds("ada", (SERVER, ""))  # a refusal records nothing
    assert ledger.reserve("ada", (SERVER, ""), Holding(SERVER, T4, 1), QUOTA) is None
    assert ledger.usage("ada") == quotas.Usage(1, 4, {"t4": 4})
    assert ledger.usage("ada", kinds=(SERVER,)) == quotas.Usage(1, 1, {"t4": 1})
    ledger.release("ada", (JOB, 1))
    assert ledger.usage("ada") == quotas.Usage(1, 1, {"t4": 1})
    assert ledger.usage("bob") == quotas.Usage()


def test_per_accelerator_caps_and_the_servers_limit_for_servers_only():
    ledger = Ledger()
    assert ledger.reserve("ada", (SERVER, "a"), Holding(SERVER), QUOTA) is None
    assert ledger.reserve("ada", (SERVER, "b"), Holding(SERVER), QUOTA) is None
    assert "2 of your 2 allowed servers" in ledger.reserve("ada", (SERVER, "c"), Holding(SERVER), QUOTA)
    assert ledger.reserve("ada", (JOB, 7), Holding(JOB, A100, 1), QUOTA) is None  # jobs: no servers cap
    why = ledger.reserve("ada", (JOB, 8), Holding(JOB, A100, 1), QUOTA)
    assert why == "1 more A100 would exceed your quota for them: 1 of 1 in use, 0 left"


def test_best_effort_jobs_are_held_beyond_quota_and_do_not_count():
    ledger = Ledger()
    assert ledger.reserve("ada", (JOB, 1), Holding(JOB, T4, 8, counted=False), QUOTA) is None
    assert ledger.usage("ada").gpus == 0
    assert ledger.reserve("ada", (SERVER, ""), Holding(SERVER, T4, 4), QUOTA) is None


def test_reserving_the_same_key_again_replaces_it():
    ledger = Ledger()
    assert ledger.reserve("ada", (JOB, 1), Holding(JOB, T4, 4), QUOTA) is None
    assert ledger.reserve("ada", (JOB, 1), Holding(JOB, T4, 4), QUOTA) is None  # not 8 of 4
    assert ledger.usage("ada").gpus == 4


def test_one_crater_and_one_ledger_per_hub_configuration():
    hub_config, other = Config(), Config()
    assert Crater.shared(hub_config) is Crater.shared(hub_config)
    assert Crater.shared(hub_config).ledger is Crater.shared(hub_config).ledger
    assert Crater.shared(other) is not Crater.shared(hub_config)
