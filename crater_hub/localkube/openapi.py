"""A minimal OpenAPI v3 so ``kubectl apply``/``create`` validate against localkube.

kubectl asks ``/openapi/v3`` whether each kind's PATCH accepts the ``fieldValidation`` query
parameter; when it does, kubectl leaves validation to the server instead of downloading full
schemas. We declare that parameter for every served kind and no request bodies, so kubectl also
computes strategic merge patches from its compiled-in types (JSON merge patch for custom kinds).
localkube does not validate fields against schemas (a listed deviation).
"""

import hashlib
import json


def _gv_path(group, version):
    return f"apis/{group}/{version}" if group else f"api/{version}"


def index(registry):
    """``/openapi/v3``: where each group-version's document lives."""
    gvs = {(r.group, r.version) for r in registry.all()}
    paths = {}
    for group, version in sorted(gvs):
        doc = document(registry, group, version)
        digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16].upper()
        path = _gv_path(group, version)
        paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    return {"paths": paths}


def document(registry, group, version):
    """The OpenAPI v3 document of one group-version: a PATCH operation per kind."""
    prefix = "/" + _gv_path(group, version)
    paths = {}
    for res in registry.in_group_version(group, version):
        base = f"{prefix}/namespaces/{{namespace}}/{res.plural}" if res.namespaced else f"{prefix}/{res.plural}"
        gvk = {"group": group, "version": version, "kind": res.kind}
        paths[base + "/{name}"] = {
            "patch": {
                "operationId": f"patch{res.kind}",
                "x-kubernetes-group-version-kind": gvk,
                "x-kubernetes-action": "patch",
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
                    {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
                ],
                "responses": {"200": {"description": "OK"}},
            }
        }
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes (localkube)", "version": "v1.31.0"},
            "paths": paths, "components": {"schemas": {}}}
