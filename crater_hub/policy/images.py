"""Which container images a workload may run: a profile's image choices, and the operator's
patterns.

A profile lists ``images`` (slug, image, ``allowed_groups``/``allowed_users``) and may add
``image_patterns``, references an operator allows without listing each one::

    "image_patterns": ["registry.example.org/team/*",
                       {"pattern": "registry.example.org/staff/**", "allowed_groups": ["ml-staff"]}]

``*`` matches within one path segment (no ``/``: ``team/*`` allows ``team/trainer:v2`` and
``team/trainer@sha256:…``, not ``team/a/b``), ``**`` across segments. A reference is matched as
written: ``python:3.12`` and ``docker.io/library/python:3.12`` are different strings.

A request names an image by the slug of a choice, or by a reference: allowed when it is the image
of a choice the user may use, the profile's default image, or a match of a pattern the user may
use. This module is pure; :mod:`.workload` applies it for spawns and jobs alike.
"""

import re
from dataclasses import dataclass

from ..checks import ConfigError, check_mapping
from .access import Access, parse_access

PATTERN_KEYS = {"pattern", "allowed_groups", "allowed_users"}
#: what an image reference may contain (registry/path:tag@digest); patterns add ``*``
REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$")
PATTERN = re.compile(r"^[A-Za-z0-9*][A-Za-z0-9._/:@+*-]*$")
MAX_REFERENCE = 512


@dataclass(frozen=True)
class ImagePattern:
    pattern: str
    access: Access = Access()

    @property
    def regex(self):
        # compiled once per pattern (patterns are frozen and few; re caches compiled patterns)
        parts = re.split(r"(\*\*|\*)", self.pattern)
        body = "".join(".*" if p == "**" else "[^/]*" if p == "*" else re.escape(p) for p in parts)
        return re.compile(f"^{body}$")

    def matches(self, reference):
        return bool(self.regex.match(reference))


def parse_patterns(entries, where):
    """``image_patterns`` of a profile: strings, or mappings with ``pattern`` and access keys."""
    if not isinstance(entries, (list, tuple)):
        raise ConfigError(f"{where} must be a list of image patterns such as 'registry.example.org/team/*'")
    out = []
    for i, entry in enumerate(entries):
        here = f"{where}[{i}]"
        if isinstance(entry, str):
            entry = {"pattern": entry}
        check_mapping(entry, PATTERN_KEYS, here, "a pattern string or keys pattern, allowed_groups, allowed_users")
        pattern = entry.get("pattern")
        if not isinstance(pattern, str) or not PATTERN.match(pattern) or len(pattern) > MAX_REFERENCE:
            raise ConfigError(f"{here} must be an image reference with '*' (one path segment) or '**' "
                              f"(any) wildcards, such as 'registry.example.org/team/*', got {pattern!r}")
        out.append(ImagePattern(pattern, parse_access(entry, here)))
    return tuple(out)


def is_reference(value):
    return isinstance(value, str) and len(value) <= MAX_REFERENCE and bool(REFERENCE.match(value))
