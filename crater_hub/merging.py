"""The one deep merge two formats we speak share: helm merging values files, and KubeSpawner
applying a profile's ``kubespawner_override`` to a dict trait.

Both merge mappings recursively, replace everything else (lists included) and delete a key whose
new value is ``None``.
"""

import copy


def merge(base, overlay):
    """``overlay`` over ``base``, as a new dict; neither input is modified."""
    out = dict(base)
    for key, value in overlay.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
