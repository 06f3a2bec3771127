"""Bad submissions are refused with a 400 (403 when not allowed) whose message names the field."""

import pytest

from ..e2e.hub import api_request

GOOD = {"profile": "cpu", "command": "true"}
CASES = [
    ({"profile": "nope"}, "profile 'nope' does not exist"),
    ({"profile": "gpu", "accelerator": "t4", "gpus": -1}, "gpus must not be negative"),
    ({"profile": "gpu", "accelerator": "t4", "gpus": 1000}, "gpus=1000 is not offered"),
    # the spawn form sends "2" (one resolver for both paths): a fraction is what is refused
    ({"profile": "gpu", "accelerator": "t4", "gpus": "2.5"}, "gpus must be a whole number"),
    ({"profile": "gpu", "accelerator": "t4", "gpus": 3}, "gpus=3 is not offered"),
    ({"command": ""}, "command must not be empty"),
    ({"command": []}, "command must not be empty"),
    ({"command": "x" * 20000}, "at most 16384 bytes"),
    ({"command": ["echo"] * 300}, "at most 256 are allowed"),
    ({"env": {"1BAD": "x"}}, "env name '1BAD' is invalid"),
    ({"env": {"A-B": "x"}}, "env name 'A-B' is invalid"),
    ({"env": {"A": 1}}, "env value of A must be a string"),
    ({"env": {f"V{i}": "x" for i in range(101)}}, "at most 100 are allowed"),
    ({"env": {"BIG": "x" * 40000}}, "at most 32768 bytes"),
    ({"priority": "urgent"}, "priority 'urgent' does not exist"),
    ({"max_runtime": 0}, "max_runtime must be a whole number from 1"),
    ({"max_runtime": 0.5}, "max_runtime must be a whole number from 1"),
    ({"colour": "red"}, "unknown field(s) 'colour'"),
]


@pytest.mark.parametrize("change,message", CASES, ids=[c[1][:30] for c in CASES])
async def test_invalid_submission_is_400_naming_the_field(hub, make_user, change, message):
    _, token = await make_user()
    r = await api_request(hub, "crater/jobs", "POST", {**GOOD, **change}, token=token)
    assert r.code == 400, r
    assert message in r.data["message"], r.data


async def test_unknown_state_filter_is_400(hub, make_user):
    _, token = await make_user()
    r = await api_request(hub, "crater/jobs?state=done", token=token)
    assert r.code == 400 and "allowed: queued" in r.data["message"]
