"""Label and field selectors, parsed once and matched against objects.

Label selectors follow the Kubernetes grammar (``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``,
``a notin (x)``, ``a``, ``!a``). Field selectors accept ``=``, ``==`` and ``!=`` over any dotted path
(``metadata.name``, ``spec.nodeName``, ``involvedObject.uid``), a superset of what real kinds allow.
"""

import re

from .errors import bad_request

_SET_RE = re.compile(r"^\s*(!?)([A-Za-z0-9_./-]+)\s*(?:(in|notin)\s*\(([^)]*)\))?\s*$")
_EQ_RE = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|!=|=)\s*([A-Za-z0-9_./-]*)\s*$")


def _split_terms(text):
    """Split on commas outside parentheses."""
    terms, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        terms.append(cur)
    return [t for t in terms if t.strip()]


def parse_label_selector(text):
    """Return a predicate over a labels dict; raise a 400 ApiError on bad syntax."""
    if not text:
        return lambda labels: True
    checks = []
    for term in _split_terms(text):
        m = _EQ_RE.match(term)
        if m:
            key, op, value = m.groups()
            if op == "!=":
                checks.append(lambda lb, k=key, v=value: lb.get(k) != v)
            else:
                checks.append(lambda lb, k=key, v=value: k in lb and lb[k] == v)
            continue
        m = _SET_RE.match(term)
        if not m:
            raise bad_request(f"unable to parse requirement: {term.strip()!r}")
        neg, key, op, values = m.groups()
        if op:
            vals = {v.strip() for v in values.split(",") if v.strip()}
            if op == "in":
                checks.append(lambda lb, k=key, vs=vals: lb.get(k) in vs)
            else:
                checks.append(lambda lb, k=key, vs=vals: lb.get(k) not in vs)
        elif neg:
            checks.append(lambda lb, k=key: k not in lb)
        else:
            checks.append(lambda lb, k=key: k in lb)
    return lambda labels: all(check(labels or {}) for check in checks)


def field_value(obj, path):
    """The string value at a dotted path, as the API server compares it ("" when absent)."""
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
        if cur is None:
            return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def parse_field_selector(text):
    """Return a predicate over a whole object; raise a 400 ApiError on bad syntax."""
    if not text:
        return lambda obj: True
    checks = []
    for term in _split_terms(text):
        m = _EQ_RE.match(term)
        if not m:
            raise bad_request(f"invalid field selector: {term.strip()!r}")
        path, op, value = m.groups()
        if op == "!=":
            checks.append(lambda o, p=path, v=value: field_value(o, p) != v)
        else:
            checks.append(lambda o, p=path, v=value: field_value(o, p) == v)
    return lambda obj: all(check(obj) for check in checks)


class Selector:
    """A label selector and a field selector together."""

    def __init__(self, labels="", fields=""):
        self._labels = parse_label_selector(labels)
        self._fields = parse_field_selector(fields)

    def matches(self, obj):
        if obj is None:
            return False
        return self._labels(obj.get("metadata", {}).get("labels") or {}) and self._fields(obj)


MATCH_ALL = Selector()
