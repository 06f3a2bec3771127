"""The checks every part of the Crater configuration shares, so that a wrong value reads the same
wherever it is: the message names the key (``Crater.profiles[2].slug``) and what is allowed."""

import re

#: slugs and names: what a Kubernetes label value and a URL both take without escaping
SLUG = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key and what is allowed."""


def check_mapping(entry, allowed, where, expected=None):
    """``entry`` must be a dict whose keys are among ``allowed``; ``expected`` words the shape
    for the message (default: the allowed keys)."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a mapping with {expected or f'keys {sorted(allowed)}'}")
    unknown = set(entry) - set(allowed)
    if unknown:
        raise ConfigError(f"{where} has unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    return entry


def check_slug(value, where):
    if not isinstance(value, str) or not SLUG.match(value):
        raise ConfigError(f"{where} must be lowercase letters, digits and '-' (≤ 40), got {value!r}")
    return value


#: a Kubernetes namespace name (a DNS-1123 label)
NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def check_one_of(value, allowed, where):
    if value not in allowed:
        raise ConfigError(f"{where} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def check_seconds(value, where, minimum=1, maximum=366 * 86400):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise ConfigError(f"{where} must be a number of seconds from {minimum} to {maximum}, got {value!r}")
    return value


def check_namespace(value, where):
    if value and not NAMESPACE.match(value):
        raise ConfigError(f"{where} must be a Kubernetes namespace name (DNS-1123 label), got {value!r}")
    return value
