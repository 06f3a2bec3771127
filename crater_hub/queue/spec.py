"""A job submission (the JSON body of ``POST /hub/api/crater/jobs``) → a frozen :class:`JobSpec`.

The workload fields (``profile``, ``accelerator``, ``gpus``, ``image``) go through the policy's
one resolver (:func:`crater_hub.policy.workload.resolve`), as a server spawn's ``user_options``
do: a job may ask for exactly what its user could start as a server, in the same words. This
module validates the job's own fields on top (``command``, ``env``, ``priority``,
``max_runtime``, ``name``) and refuses, at submit, a job that could never run
(:func:`never_runs`). Every refusal is a :class:`JobError` whose message names the field and
what is allowed; ``status`` is 400 (invalid) or 403 (not allowed for this user).
"""

import re
from dataclasses import dataclass, field

from ..policy import quotas as quotas_mod
from ..policy import workload as workload_mod
from ..policy.environment import reserved_reason
from ..policy.priorities import default_priority
from ..quantity import parse_quantity

JOB_FIELDS = ("name", "command", "env", "priority", "max_runtime", "workdir")
FIELDS = (*JOB_FIELDS, *workload_mod.OPTION_NAMES)
MAX_WORKDIR = 1024
MAX_NAME = 100
MAX_COMMAND_ARGS = 256
MAX_COMMAND_BYTES = 16 * 1024
MAX_ENV_VARS = 100
MAX_ENV_BYTES = 32 * 1024
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class JobError(Exception):
    """A submission or an action refused; ``status``: 400, 403, 404 or 409."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class JobSpec:
    owner: str
    name: str
    profile: str
    accelerator: object  # Accelerator or None
    gpus: int
    cpu: str | None
    cpu_limit: str | None
    memory: str | None
    memory_limit: str | None
    image: str
    command: tuple
    env: dict = field(default_factory=dict)
    priority: str = "normal"
    priority_value: int = 0
    best_effort: bool = False
    max_runtime: int = 86400
    workdir: str | None = None  # None: the home (or the image's working directory)
    spawn: object = None  # the WorkloadSpec the job's profile resolved to (shapes its pod)
    pod: dict = field(default_factory=dict)  # crater_hub.spawner.job_pod's pod fields

    def shape(self):
        """What dispatch needs beyond the columns: the accelerator's Kubernetes terms and the
        pod fields taken from the owner's spawner."""
        acc = self.accelerator
        if acc is None:
            shape = {"resource": None, "node_selector": {}, "tolerations": [], "device_env": ""}
        else:
            shape = {"resource": acc.resource, "node_selector": dict(acc.node_selector),
                     "tolerations": [dict(t) for t in acc.tolerations], "device_env": acc.env}
        if self.pod:
            shape["pod"] = self.pod
        return shape


def _quantity(value):
    if value is None:
        return None
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


def _int(body, key, low, high, unit=""):
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise JobError(f"{key} must be a whole number from {low} to {high}{unit}, got {value!r}")
    return value


def _command(value):
    if isinstance(value, str):
        if not value.strip():
            raise JobError("command must not be empty: give a shell line or a list of arguments")
        argv = ("sh", "-c", value)
    elif isinstance(value, list) and all(isinstance(a, str) for a in value):
        if not value or not value[0]:
            raise JobError("command must not be empty: give a shell line or a list of arguments")
        if len(value) > MAX_COMMAND_ARGS:
            raise JobError(f"command has {len(value)} arguments; at most {MAX_COMMAND_ARGS} are allowed")
        argv = tuple(value)
    else:
        raise JobError("command must be a string (run with sh -c) or a list of strings")
    size = sum(len(a.encode()) for a in argv)
    if size > MAX_COMMAND_BYTES:
        raise JobError(f"command is {size} bytes; at most {MAX_COMMAND_BYTES} bytes are allowed")
    return argv


def _env(value, accelerators):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise JobError("env must be an object mapping variable names to string values")
    if len(value) > MAX_ENV_VARS:
        raise JobError(f"env has {len(value)} variables; at most {MAX_ENV_VARS} are allowed")
    size = 0
    for name, val in value.items():
        if not ENV_NAME.match(name):
            raise JobError(f"env name {name!r} is invalid: use letters, digits and '_', not starting "
                           "with a digit (at most 128 characters)")
        why = reserved_reason(name, accelerators)
        if why:
            raise JobError(f"env name {name!r} is reserved: {why}")
        if not isinstance(val, str):
            raise JobError(f"env value of {name} must be a string, got {type(val).__name__}")
        size += len(name.encode()) + len(val.encode())
    if size > MAX_ENV_BYTES:
        raise JobError(f"env is {size} bytes; at most {MAX_ENV_BYTES} bytes are allowed")
    return dict(value)


def resolve(body, *, owner, groups, profiles, catalog, priorities, default_image,
            default_runtime, max_runtime, extra_images=()):
    """Check a submission for ``owner`` (in ``groups``) and return its :class:`JobSpec`.

    ``profiles``: the parsed ``Crater.profiles``; ``catalog``: slug -> Accelerator in force;
    ``priorities``: the parsed priority classes; ``default_image``: what a job runs when its
    profile lists no image; ``extra_images``: the library images the owner may use.
    """
    if not isinstance(body, dict):
        raise JobError("the request body must be a JSON object with at least a command")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise JobError(f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(FIELDS)}")
    if "command" not in body:
        raise JobError("command is required: a shell line or a list of arguments")
    command = _command(body["command"])
    env = _env(body.get("env"), catalog.values())

    name = body.get("name")
    if name is None:
        name = command[-1].split()[0] if body["command"] and isinstance(body["command"], str) \
            else command[0]
        name = name.rsplit("/", 1)[-1][:MAX_NAME] or "job"
    elif not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise JobError(f"name must be a non-empty string of at most {MAX_NAME} characters")

    request = {key: body[key] for key in workload_mod.OPTION_NAMES if key in body}
    try:
        spec = workload_mod.resolve(request, profiles, owner, groups, catalog, default_image, extra_images)
    except workload_mod.PolicyError as e:
        raise JobError(e.message, 403 if e.status == 403 else 400) from None

    workdir = body.get("workdir")
    if workdir is not None and (not isinstance(workdir, str) or not workdir.startswith("/")
                                or len(workdir) > MAX_WORKDIR or any(c in workdir for c in "\0\n")):
        raise JobError(f"workdir must be an absolute path in the job's container such as "
                       f"'/home/jovyan/project' (at most {MAX_WORKDIR} characters), got {workdir!r}")
    priority = _priority(body.get("priority"), priorities, owner, groups)
    runtime = default_runtime
    if "max_runtime" in body:
        runtime = _int(body, "max_runtime", 1, max_runtime, " seconds")
    return JobSpec(
        owner=owner, name=name.strip(), profile=spec.profile, accelerator=spec.accelerator,
        gpus=spec.gpus if spec.accelerator else 0,
        cpu=_quantity(spec.cpu_guarantee), cpu_limit=_quantity(spec.cpu_limit),
        memory=spec.mem_guarantee, memory_limit=spec.mem_limit, image=spec.image or default_image,
        command=command, env=env, priority=priority.name, priority_value=priority.value,
        best_effort=priority.best_effort, max_runtime=runtime, workdir=workdir, spawn=spec,
    )


def never_runs(spec, quota, fit):
    """Refuse a job that could never start with a :class:`JobError` naming why.

    ``quota``: the owner's (None: unlimited); ``fit``: the inventory's
    :class:`~crater_hub.kube.inventory.Fit` of its devices (None for a CPU-only job). Best-effort
    jobs run beyond quota by design, so only the nodes bound them.
    """
    if not spec.accelerator or not spec.gpus:
        return
    if not spec.best_effort:
        why = quotas_mod.beyond(quota, spec)
        if why:
            raise JobError(f"gpus: {why}, so this job could never start; ask for fewer", 403)
    if fit is not None and not fit.fits_when_empty:
        if fit.largest_node == 0:
            raise JobError(f"accelerator: {fit.message} This job could never start; choose "
                           f"another accelerator")
        raise JobError(f"gpus: {fit.message} This job could never start; ask for at most "
                       f"{fit.largest_node}")


def _priority(name, priorities, owner, groups):
    if name is None:
        return default_priority(priorities)
    names = ", ".join(p.name for p in priorities)
    if not isinstance(name, str):
        raise JobError(f"priority must be the name of a priority class: one of {names}")
    match = next((p for p in priorities if p.name == name), None)
    if match is None:
        raise JobError(f"priority {name!r} does not exist; choose one of: {names}")
    if not match.access.allows(owner, groups):
        allowed = ", ".join(p.name for p in priorities if p.access.allows(owner, groups)) or "none"
        raise JobError(f"priority {name!r} is restricted to {match.access.describe()}; "
                       f"yours: {allowed}", 403)
    return match


def millicores(quantity):
    return 0 if quantity is None else int(parse_quantity(quantity) * 1000)


def bytes_of(quantity):
    return 0 if quantity is None else int(parse_quantity(quantity))
