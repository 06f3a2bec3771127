"""The three PATCH flavours the API server accepts: JSON merge, JSON patch and strategic merge.

Strategic merge patch merges lists of objects by their merge key (``containers`` by ``name``,
``volumeMounts`` by ``mountPath``, ...) and understands the ``$patch`` and
``$setElementOrder``/``$deleteFromPrimitiveList``/``$retainKeys`` directives kubectl sends. Merge
keys are chosen by field name, which is how they are declared for every built-in kind we serve.
"""

import copy

from .errors import ApiError, bad_request

MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "conditions": "type",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
}
MERGED_PRIMITIVE_LISTS = {"finalizers"}


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve(doc, parts, path):
    cur = doc
    for part in parts:
        if isinstance(cur, list):
            try:
                cur = cur[int(part)]
            except (ValueError, IndexError):
                raise _unprocessable(f"path {path!r} not found") from None
        elif isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            raise _unprocessable(f"path {path!r} not found")
    return cur


def _unprocessable(message):
    return ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: {message}")


def json_patch(target, ops):
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    if not isinstance(ops, list):
        raise bad_request("json patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        kind, path = op.get("op"), op.get("path", "")
        parts = _pointer(path)
        if kind in ("move", "copy"):
            from_parts = _pointer(op.get("from", ""))
            value = copy.deepcopy(_resolve(doc, from_parts, op.get("from")))
            if kind == "move":
                doc = _remove(doc, from_parts, op.get("from"))
            doc = _add(doc, parts, value, path)
        elif kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")), path)
        elif kind == "remove":
            doc = _remove(doc, parts, path)
        elif kind == "replace":
            _resolve(doc, parts, path)
            doc = _remove(doc, parts, path)
            doc = _add(doc, parts, copy.deepcopy(op.get("value")), path)
        elif kind == "test":
            if _resolve(doc, parts, path) != op.get("value"):
                raise _unprocessable(f"test operation failed at {path!r}")
        else:
            raise bad_request(f"unknown json patch op {kind!r}: add, remove, replace, move, copy, test")
    return doc


def _add(doc, parts, value, path):
    if not parts:
        return value
    parent = _resolve(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            try:
                idx = int(last)
            except ValueError:
                raise _unprocessable(f"invalid array index in {path!r}") from None
            if idx > len(parent):
                raise _unprocessable(f"index out of range in {path!r}")
            parent.insert(idx, value)
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise _unprocessable(f"cannot add at {path!r}")
    return doc


def _remove(doc, parts, path):
    if not parts:
        return None
    parent = _resolve(doc, parts[:-1], path)
    last = parts[-1]
    try:
        if isinstance(parent, list):
            del parent[int(last)]
        else:
            del parent[last]
    except (KeyError, ValueError, IndexError, TypeError):
        raise _unprocessable(f"path {path!r} not found") from None
    return doc


def strategic_merge_patch(target, patch):
    """Strategic merge patch over a built-in object."""
    return _smp_map(copy.deepcopy(target) if isinstance(target, dict) else {}, patch)


def _smp_map(out, patch):
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            out[field] = [v for v in out.get(field, []) if v not in value]
            continue
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            merged = _smp_map(copy.deepcopy(out.get(key)) if isinstance(out.get(key), dict) else {}, value)
            if merged is None:
                out.pop(key, None)
            else:
                out[key] = merged
        elif isinstance(value, list):
            out[key] = _smp_list(key, out.get(key), value)
        else:
            out[key] = value
    if retain is not None:
        for key in [k for k in out if k not in retain]:
            del out[key]
    return out


def _smp_list(field, current, patch):
    current = current if isinstance(current, list) else []
    if field in MERGED_PRIMITIVE_LISTS:
        return current + [v for v in patch if v not in current]
    key = MERGE_KEYS.get(field)
    if field == "ports" and patch and isinstance(patch[0], dict):
        key = "containerPort" if "containerPort" in patch[0] else "port"
    if not key or not all(isinstance(p, dict) for p in patch):
        if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
            return [p for p in patch if not (isinstance(p, dict) and "$patch" in p)]
        return copy.deepcopy(patch)
    if any(p.get("$patch") == "replace" for p in patch):
        return [copy.deepcopy(p) for p in patch if "$patch" not in p]
    out = copy.deepcopy(current)
    for item in patch:
        ident = item.get(key)
        idx = next((i for i, c in enumerate(out) if isinstance(c, dict) and c.get(key) == ident), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                del out[idx]
            continue
        if idx is None:
            out.append(_smp_map({}, item))
        else:
            out[idx] = _smp_map(out[idx], item)
    return out


CONTENT_TYPES = {
    "application/merge-patch+json": "merge",
    "application/json-patch+json": "json",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}


def apply_patch(kind, target, patch, builtin):
    """Apply a patch of ``kind`` ("merge", "json", "strategic") to ``target``."""
    if kind == "merge":
        if not isinstance(patch, dict):
            raise bad_request("merge patch must be a JSON object")
        return merge_patch(target, patch)
    if kind == "json":
        return json_patch(target, patch)
    if kind == "strategic":
        if not builtin:
            raise ApiError(415, "UnsupportedMediaType",
                           "strategic merge patch is not supported for custom resources; use merge patch")
        if not isinstance(patch, dict):
            raise bad_request("strategic merge patch must be a JSON object")
        return strategic_merge_patch(target, patch)
    raise ApiError(415, "UnsupportedMediaType", f"patch type {kind!r} is not supported")
