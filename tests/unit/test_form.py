"""The spawn form as a user's browser gets it: what is offered, what is disabled and why, and
what a submission turns into (the same user_options a REST spawn sends)."""

from html.parser import HTMLParser

import pytest

from crater_hub.policy import quotas
from crater_hub.policy import workload as options
from crater_hub.policy.offer import offer
from crater_hub.spawner import form

from .test_spawn_options import CATALOG, crater


def capacity(t4_free=8, t4_block=8, a100_free=4, a100_block=4):
    def acc(slug, name, memory, free, block, total):
        return {"slug": slug, "display_name": name, "resource": "nvidia.com/gpu", "memory": memory,
                "total": total, "allocatable": total, "in_use": total - free, "free": free,
                "largest_free_block": block, "nodes": []}
    return {"accelerators": [acc("t4", "Tesla T4", "16Gi", t4_free, t4_block, 8),
                             acc("a100", "A100 80GB", "80Gi", a100_free, a100_block, 4)],
            "nodes": [], "updated": "2025-01-01T12:00:00.000Z"}


def model(groups=(), quota=None, **free):
    return offer(crater().profile_list(), capacity(**free), "ada", list(groups), quota, quotas.Usage())


class Page(HTMLParser):
    """The form controls of an HTML fragment, and what the browser would submit."""

    def __init__(self, html):
        super().__init__()
        self.radios, self.selects, self.texts = [], {}, []
        self._select = self._option = None
        self._in_script = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self._in_script = tag == "script"
        if tag == "input" and a.get("type") == "radio":
            self.radios.append(a)
        elif tag == "select":
            self._select = {**a, "options": []}
            self.selects[a["id"]] = self._select
        elif tag == "option":
            self._option = {**a, "text": ""}
            self._select["options"].append(self._option)

    def handle_endtag(self, tag):
        self._in_script = False
        if tag == "option":
            self._option["text"] = " ".join(self._option["text"].split())
            self._option = None
        elif tag == "select":
            self._select = None

    def handle_data(self, data):
        if self._option is not None:
            self._option["text"] += data
        if not self._in_script:
            self.texts.append(data)

    @property
    def text(self):
        """The visible text, whitespace collapsed as a browser shows it."""
        return " ".join("".join(self.texts).split())

    def options_of(self, select_id):
        return {o["value"]: o for o in self.selects[select_id]["options"]}

    def submitted(self):
        """The form data set (HTML's rules: disabled controls and options are not submitted)."""
        data = {}
        for radio in self.radios:
            if "checked" in radio and "disabled" not in radio:
                data.setdefault(radio["name"], []).append(radio["value"])
        for select in self.selects.values():
            if "disabled" in select:
                continue
            opts = select["options"]
            chosen = [o for o in opts if "selected" in o][-1:] or [o for o in opts if "disabled" not in o][:1]
            if chosen and "disabled" not in chosen[0]:
                data.setdefault(select["name"], []).append(chosen[0]["value"])
        return data


def test_only_the_profiles_given_appear_default_first_checked():
    page = Page(form.render(model()))
    assert [r["value"] for r in page.radios] == ["cpu", "gpu"]  # "staff" is ml-staff only
    assert [r["value"] for r in page.radios if "checked" in r] == ["cpu"]
    staff = Page(form.render(model(groups=["ml-staff"])))
    assert [r["value"] for r in staff.radios] == ["cpu", "gpu", "staff"]


def test_free_over_total_per_accelerator_and_remaining_quota_are_shown():
    page = Page(form.render(model(quota=quotas.Quota(servers=3, gpus=4), t4_free=6, t4_block=6)))
    assert "Tesla T4 (16Gi): 6 / 8 free" in page.text
    assert "Your remaining quota: 4 GPUs, 3 servers." in page.text
    accelerators = page.options_of("crater-gpu-accelerator")
    assert accelerators["t4"]["text"] == "Tesla T4 (16Gi) — 6 / 8 free"
    assert accelerators["none"]["text"] == "No GPU"  # allow_cpu_only


def test_unavailable_counts_are_disabled_with_their_reason():
    page = Page(form.render(model(quota=quotas.Quota(gpus=1), t4_free=3, t4_block=1)))
    counts = page.options_of("crater-gpu-gpus-t4")
    assert "disabled" not in counts["1"] and counts["1"]["text"] == "1"
    assert "disabled" in counts["2"]
    assert counts["2"]["title"] == "only 1 free on one node now"
    assert counts["2"]["text"] == "2 — only 1 free on one node now"


def test_quota_reason_when_the_cluster_has_room():
    page = Page(form.render(model(quota=quotas.Quota(gpus=1))))
    counts = page.options_of("crater-gpu-gpus-t4")
    assert counts["2"]["title"] == "exceeds your remaining GPU quota (1)"


def test_unlimited_quota_reads_unlimited():
    assert "Your remaining quota: unlimited GPUs, unlimited servers." in Page(form.render(model())).text


def test_user_options_are_preselected_and_only_the_chosen_count_list_submits():
    chosen = {"profile": "gpu", "image": "torch", "accelerator": "a100", "gpus": "2"}
    page = Page(form.render(model(groups=["ml-staff"]), chosen))
    assert [r["value"] for r in page.radios if "checked" in r] == ["gpu"]
    assert "disabled" in page.selects["crater-gpu-gpus-t4"]
    assert "disabled" not in page.selects["crater-gpu-gpus-a100"]
    assert form.options_from_form(page.submitted()) == chosen


@pytest.mark.parametrize("groups, pick", [((), "cpu"), ((), "gpu"), (["ml-staff"], "staff")])
def test_what_the_browser_submits_resolves_to_a_valid_spawn(groups, pick):
    """Round trip: render, the browser submits the defaults of a profile, resolve() accepts it."""
    page = Page(form.render(model(groups=groups, t4_free=1, t4_block=1), {"profile": pick}))
    user_options = form.options_from_form(page.submitted())
    assert user_options["profile"] == pick
    spec = options.resolve(user_options, crater().profile_list(), "ada", list(groups), CATALOG)
    if pick == "gpu":  # the first count that is available, as strings from the form
        assert user_options == {"profile": "gpu", "image": "torch", "accelerator": "t4", "gpus": "1"}
        assert (spec.accelerator.slug, spec.gpus) == ("t4", 1)
    if pick == "staff":
        assert (spec.accelerator.slug, spec.gpus) == ("a100", 4)


def test_options_from_form_reads_only_the_chosen_profile():
    formdata = {
        "profile": ["gpu"],
        "profile-option-gpu--accelerator": ["t4"], "profile-option-gpu--gpus": ["2"],
        "profile-option-staff--gpus": ["4"], "profile-option-gpu--bogus": ["x"],
    }
    assert form.options_from_form(formdata) == {"profile": "gpu", "accelerator": "t4", "gpus": "2"}
    assert form.options_from_form({}) == {}


def test_text_from_configuration_is_escaped():
    m = model()
    m["profiles"][0]["description"] = "<script>alert(1)</script>"
    html = form.render(m)
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html


def test_no_profile_for_this_user_says_so():
    html = form.render({"profiles": [], "quota": quotas.remaining(None, quotas.Usage()),
                        "servers_running": 0, "updated": None})
    assert "No server profile is available to you" in html and 'name="profile"' not in html


def test_a_profile_with_image_patterns_offers_an_other_image_field_that_resolves_alike():
    m = model()
    m["profiles"][1]["image_patterns"] = ["reg.example.org/team/*"]
    html = form.render(m, {"profile": "gpu", "image": "reg.example.org/team/x:1"})
    assert 'name="profile-option-gpu--image--unlisted-choice"' in html
    assert 'value="reg.example.org/team/x:1"' in html and "Allowed: reg.example.org/team/*" in html
    assert 'name="profile-option-cpu--image--unlisted-choice"' not in html
    submitted = form.options_from_form({
        "profile": ["gpu"], "profile-option-gpu--image": ["torch"],
        "profile-option-gpu--image--unlisted-choice": [" reg.example.org/team/x:1 "]})
    assert submitted == {"profile": "gpu", "image": "reg.example.org/team/x:1"}
    blank = form.options_from_form({"profile": ["gpu"], "profile-option-gpu--image": ["torch"],
                                    "profile-option-gpu--image--unlisted-choice": [""]})
    assert blank == {"profile": "gpu", "image": "torch"}
