"""Priority classes of batch jobs (``Crater.job_priorities``), parsed into frozen values: policy,
because who may use which class is an access rule like a profile's.

Priority classes (``Crater.job_priorities``)::

    [{"name": "high", "value": 100, "allowed_groups": ["ml-staff"]},
     {"name": "normal", "value": 50, "default": true},
     {"name": "best-effort", "value": 0, "best_effort": true}]

``value`` orders the queue (higher first). ``best_effort`` classes run outside the user's quota
on idle capacity and are the ones preempted for guaranteed jobs. ``allowed_groups`` /
``allowed_users`` restrict who may submit with a class (everyone when both are absent). With no
classes configured there is one, ``normal``, open to everyone.
"""

from dataclasses import dataclass

from ..checks import ConfigError, check_mapping, check_slug
from .access import Access, parse_access

PRIORITY_KEYS = {"name", "value", "default", "best_effort", "allowed_groups", "allowed_users",
                 "description"}


@dataclass(frozen=True)
class PriorityClass:
    name: str
    value: int = 0
    default: bool = False
    best_effort: bool = False
    access: Access = Access()
    description: str = ""

    def model(self):
        return {"name": self.name, "value": self.value, "default": self.default,
                "best_effort": self.best_effort, "description": self.description}


DEFAULT_PRIORITIES = (PriorityClass("normal", 0, default=True),)


def parse_priorities(entries, where="Crater.job_priorities"):
    """Validate the priority classes; the default one is the ``default: true`` entry, else the
    first open to everyone that is not best-effort, else the first."""
    if not isinstance(entries, (list, tuple)):
        raise ConfigError(f"{where} must be a list of priority classes, got {type(entries).__name__}")
    if not entries:
        return DEFAULT_PRIORITIES
    out, seen = [], set()
    for i, entry in enumerate(entries):
        here = f"{where}[{i}]"
        check_mapping(entry, PRIORITY_KEYS, here)
        name = check_slug(entry.get("name"), f"{here}.name")
        if name in seen:
            raise ConfigError(f"{here}.name {name!r} is used twice")
        seen.add(name)
        value = entry.get("value", 0)
        if not isinstance(value, int) or isinstance(value, bool) or abs(value) > 10**9:
            raise ConfigError(f"{here}.value must be an integer (|value| ≤ 10^9), got {value!r}")
        for flag in ("default", "best_effort"):
            if not isinstance(entry.get(flag, False), bool):
                raise ConfigError(f"{here}.{flag} must be true or false, got {entry[flag]!r}")
        out.append(PriorityClass(
            name=name, value=value, default=entry.get("default", False),
            best_effort=entry.get("best_effort", False),
            access=parse_access(entry, here),
            description=str(entry.get("description") or ""),
        ))
    if sum(p.default for p in out) > 1:
        raise ConfigError(f"{where}: more than one priority class has default: true")
    return tuple(out)


def default_priority(classes):
    marked = [p for p in classes if p.default]
    if marked:
        return marked[0]
    open_ = [p for p in classes if not p.access.groups and not p.access.users and not p.best_effort]
    return open_[0] if open_ else classes[0]
