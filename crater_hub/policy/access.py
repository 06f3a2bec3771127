"""Who may use an entry of the configuration (a profile, an image, an accelerator choice, a
priority class): the 2i2c convention of ``allowed_groups`` and ``allowed_users``, in one type so
that every room words and checks a restriction the same way."""

from dataclasses import dataclass

from ..checks import ConfigError


@dataclass(frozen=True)
class Access:
    """Who may use an entry: everyone when both sets are empty."""

    groups: frozenset = frozenset()
    users: frozenset = frozenset()

    def allows(self, user_name, user_groups):
        if not self.groups and not self.users:
            return True
        return user_name in self.users or bool(self.groups & set(user_groups))

    def describe(self):
        parts = []
        if self.groups:
            parts.append("members of " + ", ".join(sorted(self.groups)))
        if self.users:
            parts.append("users " + ", ".join(sorted(self.users)))
        return " and ".join(parts)


def parse_access(entry, where):
    """The ``allowed_groups``/``allowed_users`` of a configuration entry (both optional)."""
    out = {}
    for key in ("allowed_groups", "allowed_users"):
        value = entry.get(key, [])
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}.{key} must be a list of names, got {value!r}")
        out[key] = frozenset(value)
    return Access(out["allowed_groups"], out["allowed_users"])
