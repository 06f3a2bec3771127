"""The job queue's operator settings, parsed from ``Crater.job_*`` into frozen values.

Priority classes (``Crater.job_priorities``)::

    [{"name": "high", "value": 100, "allowed_groups": ["ml-staff"]},
     {"name": "normal", "value": 50, "default": true},
     {"name": "best-effort", "value": 0, "best_effort": true}]

``value`` orders the queue (higher first). ``best_effort`` classes run outside the user's quota
on idle capacity and are the ones preempted for guaranteed jobs. ``allowed_groups`` /
``allowed_users`` restrict who may submit with a class (everyone when both are absent). With no
classes configured there is one, ``normal``, open to everyone.
"""

import re
from dataclasses import dataclass

from ..checks import ConfigError, check_mapping, check_slug
from ..spawner.profiles import Access
from .engine import STRATEGIES

PRIORITY_KEYS = {"name", "value", "default", "best_effort", "allowed_groups", "allowed_users",
                 "description"}
BACKENDS = ("embedded", "kueue")


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


def _names(value, where):
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of names, got {value!r}")
    return frozenset(value)


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
            access=Access(_names(entry.get("allowed_groups", []), f"{here}.allowed_groups"),
                          _names(entry.get("allowed_users", []), f"{here}.allowed_users")),
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


def check_backend(value, where="Crater.job_queue_backend"):
    if value not in BACKENDS:
        raise ConfigError(f"{where} must be one of {', '.join(BACKENDS)}, got {value!r}")
    return value


def check_strategy(value, where="Crater.job_queueing_strategy"):
    if value not in STRATEGIES:
        raise ConfigError(f"{where} must be one of {', '.join(STRATEGIES)}, got {value!r}")
    return value


def check_seconds(value, where, minimum=1, maximum=366 * 86400):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise ConfigError(f"{where} must be a number of seconds from {minimum} to {maximum}, got {value!r}")
    return value


def check_namespace(value, where="Crater.jobs_namespace"):
    if value and not re.match(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", value):
        raise ConfigError(f"{where} must be a Kubernetes namespace name (DNS-1123 label), got {value!r}")
    return value
