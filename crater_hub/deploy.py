"""Check Zero to JupyterHub values for crater_hub before ``helm upgrade``, without a cluster.

    python -m crater_hub.deploy check [--chart DIR] VALUES [VALUES ...]

VALUES are merged in order as ``helm --values`` merges them (mappings key by key, lists replaced
whole, ``null`` deletes a key). Then:

1. with ``--chart DIR`` (the chart as ``helm pull jupyterhub/jupyterhub --untar`` leaves it:
   ``values.yaml`` and ``values.schema.json``), the values are merged over the chart's defaults
   and validated against its schema — the check ``helm install`` makes first;
2. the hub's configuration is built as the chart's ``jupyterhub_config.py`` builds it (see
   :func:`hub_config`), ``hub.extraConfig`` included, and what crater_hub needs from it is
   checked: crater_hub.setup ran, the spawner is CraterSpawner, every ``hub.config.Crater`` key
   exists and its value validates, roles name only scopes that exist;
3. a summary of what researchers will get is printed: profiles, accelerators, quotas, scopes.

Exit status 0 when everything holds, 1 with one ``error:`` line per problem otherwise.
"""

import argparse
import copy
import json
import sys
from pathlib import Path

import yaml
from traitlets import TraitError
from traitlets.config import Config

from .merging import merge

#: singleuser.* keys the chart copies into KubeSpawner traits (z2jh 4.x jupyterhub_config.py);
#: None: the camelCase of the trait name.
KUBESPAWNER_KEYS = (
    ("pod_name_template", None), ("start_timeout", None), ("image_pull_policy", "image.pullPolicy"),
    ("events_enabled", "events"), ("extra_labels", None), ("extra_annotations", None), ("uid", None),
    ("fs_gid", None), ("service_account", "serviceAccountName"),
    ("storage_extra_labels", "storage.extraLabels"), ("node_selector", None),
    ("node_affinity_required", "extraNodeAffinity.required"),
    ("node_affinity_preferred", "extraNodeAffinity.preferred"),
    ("pod_affinity_required", "extraPodAffinity.required"),
    ("pod_affinity_preferred", "extraPodAffinity.preferred"),
    ("pod_anti_affinity_required", "extraPodAntiAffinity.required"),
    ("pod_anti_affinity_preferred", "extraPodAntiAffinity.preferred"),
    ("lifecycle_hooks", None), ("init_containers", None), ("extra_containers", None),
    ("mem_limit", "memory.limit"), ("mem_guarantee", "memory.guarantee"),
    ("cpu_limit", "cpu.limit"), ("cpu_guarantee", "cpu.guarantee"),
    ("extra_resource_limits", "extraResource.limits"),
    ("extra_resource_guarantees", "extraResource.guarantees"), ("environment", "extraEnv"),
    ("profile_list", None), ("extra_pod_config", None),
)
#: hub.* keys the chart copies into JupyterHub traits.
JUPYTERHUB_KEYS = ("concurrent_spawn_limit", "active_server_limit", "base_url", "allow_named_servers",
                   "named_server_limit_per_user", "authenticate_prometheus", "redirect_to_server",
                   "shutdown_on_logout", "template_paths", "template_vars")
#: hub.config entries the chart drops because it sets them from its own Secret.
CHART_SECRETS = {"JupyterHub": ("proxy_auth_token", "cookie_secret", "services"),
                 "ConfigurableHTTPProxy": ("auth_token",), "CryptKeeper": ("keys",)}


class DeployError(Exception):
    """A values file cannot be read or merged; the message names the file."""


# -- values --------------------------------------------------------------------------------------


def read_yaml(path):
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise DeployError(f"{path}: cannot read it ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise DeployError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DeployError(f"{path}: a values file is a mapping at the top, got {type(data).__name__}")
    return data


def load_values(paths, defaults=None):
    """The values helm would render with: ``defaults`` (the chart's), then each file in order."""
    values = dict(defaults or {})
    for path in paths:
        values = merge(values, read_yaml(path))
    return values


def schema_errors(values, schema):
    """Every place where ``values`` breaks the chart's JSON schema, as ``path: message`` lines."""
    from jsonschema import Draft7Validator

    errors = sorted(Draft7Validator(schema).iter_errors(values), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}" for e in errors]


def load_chart(chart_dir):
    """``(defaults, schema)`` of a chart directory (``values.yaml``, ``values.schema.json``)."""
    chart_dir = Path(chart_dir)
    defaults = read_yaml(chart_dir / "values.yaml")
    schema_path = chart_dir / "values.schema.json"
    try:
        schema = json.loads(schema_path.read_text())
    except OSError as e:
        raise DeployError(f"{schema_path}: cannot read it ({e.strerror}); --chart wants the "
                          "directory `helm pull jupyterhub/jupyterhub --untar` creates") from None
    except json.JSONDecodeError as e:
        raise DeployError(f"{schema_path}: not valid JSON: {e}") from None
    return defaults, schema


# -- the hub's configuration, as the chart builds it ---------------------------------------------


def get_config(values, key, default=None):
    """The chart's ``z2jh.get_config``: ``a.b.c`` looked up in the values; ``default`` when a
    level is missing (an explicit ``null`` is returned as None)."""
    value = values
    for level in key.split("."):
        if not isinstance(value, dict) or level not in value:
            return default
        value = value[level]
    return value


def _camel(name):
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def hub_config(values, namespace="jhub"):
    """The traitlets Config the chart's ``jupyterhub_config.py`` builds from ``values``.

    A model of the z2jh 4.x file, limited to what decides what crater_hub sees: the spawner
    class, KubeSpawner traits from ``singleuser.*`` (volumes as dicts, as the chart builds them),
    JupyterHub traits from ``hub.*``, services and roles (``cull``, ``hub.services``,
    ``hub.loadRoles``), then ``hub.config`` applied with ``c[Class].update(...)``, then each
    ``hub.extraConfig`` entry executed in key order with ``c`` and ``get_config`` in scope.
    Left out: networking, secrets, the database URL, authenticator wiring of older charts.
    """
    c = Config()

    def get(key, default=None):
        return get_config(values, key, default)

    def set_if_not_none(section, trait, key):
        value = get(key)
        if value is not None:
            section[trait] = value

    c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
    c.JupyterHub.cleanup_servers = False
    c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}
    for trait in JUPYTERHUB_KEYS:
        set_if_not_none(c.JupyterHub, trait, "hub." + _camel(trait))
    c.KubeSpawner.namespace = namespace
    set_if_not_none(c.Spawner, "consecutive_failure_limit", "hub.consecutiveFailureLimit")
    for trait, key in KUBESPAWNER_KEYS:
        set_if_not_none(c.KubeSpawner, trait, "singleuser." + (key or _camel(trait)))
    image = get("singleuser.image.name")
    if image:
        tag = get("singleuser.image.tag")
        c.KubeSpawner.image = f"{image}:{tag}" if tag else image
    if "allowPrivilegeEscalation" in (get("singleuser") or {}):
        c.KubeSpawner.allow_privilege_escalation = get("singleuser.allowPrivilegeEscalation")
    tolerations = (get("scheduling.userPods.tolerations") or []) + (get("singleuser.extraTolerations") or [])
    if tolerations:
        c.KubeSpawner.tolerations = tolerations
    _storage(c, get)

    c.JupyterHub.services = []
    c.JupyterHub.load_roles = []
    if get("cull.enabled", False):
        c.JupyterHub.services.append({"name": "jupyterhub-idle-culler",
                                      "command": ["python3", "-m", "jupyterhub_idle_culler"]})
        c.JupyterHub.load_roles.append({
            "name": "jupyterhub-idle-culler", "services": ["jupyterhub-idle-culler"],
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"]})
    for name, service in (get("hub.services") or {}).items():
        service = {k: v for k, v in service.items() if k != "apiToken"}
        service.setdefault("name", name)
        c.JupyterHub.services.append(service)
    for name, role in (get("hub.loadRoles") or {}).items():
        role = dict(role)
        role.setdefault("name", name)
        c.JupyterHub.load_roles.append(role)
    _unspecified = object()
    cmd = get("singleuser.cmd", _unspecified)
    if cmd is not _unspecified:
        c.Spawner.cmd = cmd
    set_if_not_none(c.Spawner, "default_url", "singleuser.defaultUrl")
    if get("debug.enabled", False):
        c.JupyterHub.log_level = "DEBUG"
        c.Spawner.debug = True

    for app, cfg in copy.deepcopy(get("hub.config") or {}).items():
        for secret in CHART_SECRETS.get(app, ()):
            cfg.pop(secret, None)
        c[app].update(cfg)

    for key, source in sorted((get("hub.extraConfig") or {}).items()):
        scope = {"c": c, "get_config": get, "z2jh_get_config": get,
                 "set_config_if_not_none": set_if_not_none}
        exec(compile(source, f"hub.extraConfig.{key}", "exec"), scope)  # as the chart does
    return c


def _storage(c, get):
    """Home volume and extra volumes as the chart builds them: dicts keyed by name."""
    c.KubeSpawner.volumes = {}
    c.KubeSpawner.volume_mounts = {}
    storage = get("singleuser.storage.type")
    home = get("singleuser.storage.homeMountPath")
    if storage == "dynamic":
        template = get("singleuser.storage.dynamic.pvcNameTemplate")
        if template:
            c.KubeSpawner.pvc_name_template = template
        volume = get("singleuser.storage.dynamic.volumeNameTemplate")
        c.KubeSpawner.storage_pvc_ensure = True
        for trait, key in (("storage_class", "dynamic.storageClass"),
                           ("storage_access_modes", "dynamic.storageAccessModes"),
                           ("storage_capacity", "capacity")):
            if get("singleuser.storage." + key) is not None:
                c.KubeSpawner[trait] = get("singleuser.storage." + key)
        c.KubeSpawner.volumes = {volume: {"name": volume, "persistentVolumeClaim": {"claimName": "{pvc_name}"}}}
        c.KubeSpawner.volume_mounts = {volume: {"name": volume, "mountPath": home,
                                                "subPath": get("singleuser.storage.dynamic.subPath")}}
    elif storage == "static":
        c.KubeSpawner.volumes = {"home": {"name": "home", "persistentVolumeClaim": {
            "claimName": get("singleuser.storage.static.pvcName")}}}
        c.KubeSpawner.volume_mounts = {"home": {"name": "home", "mountPath": home,
                                                "subPath": get("singleuser.storage.static.subPath")}}
    extra = get("singleuser.storage.extraVolumes") or {}
    for key, volume in (extra.items() if isinstance(extra, dict) else ((v["name"], v) for v in extra)):
        c.KubeSpawner.volumes[key] = volume
    mounts = get("singleuser.storage.extraVolumeMounts") or {}
    pairs = mounts.items() if isinstance(mounts, dict) else ((f"{m['name']}-{i}", m) for i, m in enumerate(mounts))
    for key, mount in pairs:
        c.KubeSpawner.volume_mounts[key] = mount


# -- what crater_hub needs from it ---------------------------------------------------------------


def import_class(value):
    """A class configured by object or by dotted name (None when it cannot be imported)."""
    if isinstance(value, type):
        return value
    module, _, name = str(value).rpartition(".")
    try:
        return getattr(__import__(module, fromlist=[name]), name)
    except (ImportError, AttributeError, ValueError):
        return None


def crater_errors(c, values):
    """What stops crater_hub from working with the hub configuration ``c`` (built from ``values``)."""
    from .config import Crater
    from .handlers import custom_scopes
    from .spawner import CraterSpawner

    errors = []
    hub = c.JupyterHub
    defined = dict(hub.get("custom_scopes", {}))
    if not set(custom_scopes()) <= set(defined):
        errors.append("hub.extraConfig: crater_hub.setup(c) did not run (crater's scopes are not "
                      "defined); add an entry `import crater_hub; crater_hub.setup(c)`")
    spawner = import_class(hub.get("spawner_class"))
    if spawner is None or not issubclass(spawner, CraterSpawner):
        errors.append(f"the hub's spawner is {hub.get('spawner_class')!r}, not CraterSpawner: set "
                      "hub.config.JupyterHub.spawner_class: crater_hub.spawner.CraterSpawner")
    known = set(Crater.class_trait_names(config=True))
    unknown = sorted(set(c.Crater) - known)
    if unknown:
        errors.append(f"hub.config.Crater has unknown keys {unknown}; crater_hub "
                      f"{_version()} knows: {', '.join(sorted(known))}")
    try:
        crater = Crater(config=c)
    except TraitError as e:
        errors.append(f"hub.config.{e}")
        crater = None
    if crater is not None and crater.profiles and get_config(values, "singleuser.profileList"):
        errors.append("singleuser.profileList is set and so is hub.config.Crater.profiles: "
                      "CraterSpawner offers Crater.profiles; leave profileList empty")
    from jupyterhub.scopes import scope_definitions

    for role in hub.get("load_roles", []):
        for scope in role.get("scopes", []):
            base = scope.split("!", 1)[0]
            # custom scopes exist only when declared in this config (scope_definitions may hold
            # some from an earlier hub in the same process)
            known = base in defined if base.startswith("custom:") else base in scope_definitions
            if not known:
                errors.append(f"hub.loadRoles.{role.get('name')}: scope {scope!r} is not defined "
                              "(JupyterHub would refuse to start)")
    return errors


def _version():
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("crater-hub")
    except PackageNotFoundError:
        return "(not installed)"


def summary(c):
    """What researchers and admins get from configuration ``c``, one line per fact."""
    from .config import Crater

    crater = Crater(config=c)
    spawner = c.JupyterHub.get("spawner_class")
    lines = [f"spawner: {getattr(spawner, '__module__', '')}.{spawner.__name__}"
             if isinstance(spawner, type) else f"spawner: {spawner}"]
    catalog = crater.accelerator_catalog()
    lines.append("accelerators: " + (", ".join(f"{a.slug} ({a.resource})" for a in catalog)
                                     if catalog else "discovered from node labels"))
    lines.append("profiles:")
    for p in crater.profile_list():
        devices = "; ".join(f"{a.accelerator} × {', '.join(map(str, a.counts))}" for a in p.accelerators)
        who = f" [{p.access.describe()}]" if p.access.describe() else ""
        lines.append(f"  {p.slug}{' (default)' if p.default else ''}: {p.display_name}"
                     f"{' — ' + devices if devices else ''}{who}")
    policy = crater.quota_policy()

    def quota(q):
        parts = [f"{k} {getattr(q, k)}" for k in ("servers", "gpus") if getattr(q, k) is not None]
        parts += [f"{slug} {n}" for slug, n in sorted(q.accelerators.items())]
        return ", ".join(parts) or "unlimited"

    lines.append(f"quotas: default: {quota(policy.default)}"
                 + "".join(f"; group {g}: {quota(q)}" for g, q in sorted(policy.groups.items()))
                 + ("; admins exempt" if policy.admins_exempt else ""))
    for scope, holders in sorted(scope_holders(c).items()):
        lines.append(f"scope {scope}: {', '.join(holders)}")
    return lines


def scope_holders(c):
    """custom:crater:* scope -> who holds it through roles (``every user``, ``group x``, ...)."""
    holders = {}
    for scope in c.JupyterHub.get("extra_user_scopes", set()):
        holders.setdefault(scope, []).append("every user")
    for role in c.JupyterHub.get("load_roles", []):
        for scope in role.get("scopes", []):
            if not scope.startswith("custom:crater:"):
                continue
            if role.get("name") == "user":
                holders.setdefault(scope, []).append("every user")
            for kind in ("users", "groups", "services"):
                for name in role.get(kind, []):
                    holders.setdefault(scope, []).append(f"{kind[:-1]} {name} (role {role['name']})")
    return holders


# -- command line --------------------------------------------------------------------------------


def check(paths, chart_dir=None, out=sys.stdout):
    """Run every check on the values files ``paths``; print the summary; return the errors."""
    errors = []
    defaults, schema = load_chart(chart_dir) if chart_dir else ({}, None)
    values = load_values(paths, defaults)
    if schema is not None:
        errors += [f"chart schema: {line}" for line in schema_errors(values, schema)]
        print(f"chart schema: {'valid' if not errors else 'INVALID'} ({chart_dir})", file=out)
    else:
        print("chart schema: not checked (give --chart DIR to check it)", file=out)
    if errors:
        return errors
    try:
        c = hub_config(values)
    except Exception as e:  # the operator's extraConfig failing is what we report
        return [f"hub.extraConfig failed: {type(e).__name__}: {e}"]
    errors += crater_errors(c, values)
    if not errors:
        for line in summary(c):
            print(line, file=out)
    return errors


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m crater_hub.deploy",
                                     description="Check Zero to JupyterHub values for crater_hub.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check_cmd = commands.add_parser("check", help="validate values files and print what they configure")
    check_cmd.add_argument("--chart", metavar="DIR",
                           help="the jupyterhub chart, as `helm pull jupyterhub/jupyterhub --untar` "
                                "leaves it: validate against its schema and defaults")
    check_cmd.add_argument("values", nargs="+", metavar="VALUES", help="values files, in helm's order")
    args = parser.parse_args(argv)
    try:
        errors = check(args.values, args.chart)
    except DeployError as e:
        errors = [str(e)]
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
