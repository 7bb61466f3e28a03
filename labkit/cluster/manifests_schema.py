"""Check a PyTorchJob or JobSet offline, before `kubectl apply` does it on a real cluster.

Three layers, each catching what the others cannot:
1. labkit's own JSON schema of the fields it writes (below), derived from the CRDs of
   kubeflow/training-operator v1.9.0 and kubernetes-sigs/jobset v0.9.1 but only the subset
   labkit uses. It is strict (unknown keys are errors) like `kubectl apply` with server-side
   field validation (`--validate=strict`, kubectl's default).
2. The embedded pod template is checked by PyPI `kubernetes-validate`, which bundles the core
   Kubernetes schemas: a PyTorchJob's template is wrapped as a `v1 PodTemplate`, a JobSet's
   Job template as a `batch/v1 Job` (so the Job fields are checked too).
3. A few rules no schema states (the training operator's admission webhook, the Job API).

    errors = validation_errors(doc)   # [] when valid; each message names the field
"""

from __future__ import annotations

from labkit.errors import UserError

DEFAULT_K8S_VERSION = "1.33"


def _obj(required=(), **properties) -> dict:
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False}


def _int(minimum: int = 0) -> dict:
    return {"type": "integer", "minimum": minimum, "maximum": 2**31 - 1}  # int32 in the CRDs


_STR = {"type": "string"}
_STR_MAP = {"type": "object", "additionalProperties": _STR}
_ANY_OBJ = {"type": "object"}  # left to layer 2 (kubernetes-validate)
_METADATA = _obj(
    ["name"],
    # PyTorchJob names must be DNS-1035 labels (the operator's webhook); JobSet's are close.
    name={"type": "string", "pattern": "^[a-z]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
    namespace={"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
    labels=_STR_MAP, annotations=_STR_MAP)

_REPLICA_SPEC = _obj(
    ["replicas", "template"],
    replicas=_int(0),
    restartPolicy={"enum": ["Always", "OnFailure", "Never", "ExitCode"]},
    template=_ANY_OBJ)

PYTORCHJOB_SCHEMA = _obj(
    ["apiVersion", "kind", "metadata", "spec"],
    apiVersion={"const": "kubeflow.org/v1"},
    kind={"const": "PyTorchJob"},
    metadata=_METADATA,
    spec=_obj(
        ["pytorchReplicaSpecs"],
        # A string in the CRD: "auto", "cpu", "gpu" or a number such as "8".
        nprocPerNode={"type": "string", "pattern": "^(auto|cpu|gpu|[1-9][0-9]*)$"},
        elasticPolicy=_obj(
            [], rdzvBackend={"enum": ["c10d", "etcd", "etcd-v2"]}, rdzvHost=_STR,
            rdzvPort=_int(1), rdzvId=_STR, minReplicas=_int(1), maxReplicas=_int(1),
            maxRestarts=_int(0), nProcPerNode=_int(1)),
        runPolicy=_obj(
            [], backoffLimit=_int(0), cleanPodPolicy={"enum": ["None", "Running", "All"]},
            ttlSecondsAfterFinished=_int(0), activeDeadlineSeconds=_int(1)),
        pytorchReplicaSpecs={"type": "object", "minProperties": 1,
                             "properties": {"Master": _REPLICA_SPEC, "Worker": _REPLICA_SPEC},
                             "additionalProperties": False}))

JOBSET_SCHEMA = _obj(
    ["apiVersion", "kind", "metadata", "spec"],
    apiVersion={"const": "jobset.x-k8s.io/v1alpha2"},
    kind={"const": "JobSet"},
    metadata=_METADATA,
    spec=_obj(
        ["replicatedJobs"],
        network=_obj([], enableDNSHostnames={"type": "boolean"}, subdomain=_STR,
                     publishNotReadyAddresses={"type": "boolean"}),
        failurePolicy=_obj([], maxRestarts=_int(0)),
        successPolicy=_obj(["operator"], operator={"enum": ["All", "Any"]},
                           targetReplicatedJobs={"type": "array", "items": _STR}),
        suspend={"type": "boolean"},
        ttlSecondsAfterFinished=_int(0),
        replicatedJobs={"type": "array", "minItems": 1,
                        "items": _obj(["name", "template"], name=_STR, replicas=_int(1),
                                      template=_obj(["spec"], metadata=_ANY_OBJ,
                                                    spec=_ANY_OBJ))}))

SCHEMAS = {"PyTorchJob": PYTORCHJOB_SCHEMA, "JobSet": JOBSET_SCHEMA}


def field_path(parts) -> str:
    """['spec', 'containers', 0, 'env'] -> 'spec.containers[0].env' (how kubectl names fields)."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _embedded(doc: dict):
    """(path of the template, wrapped core object) for every embedded pod/Job template."""
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return
    if doc.get("kind") == "PyTorchJob" and isinstance(spec.get("pytorchReplicaSpecs"), dict):
        for rtype, rspec in spec["pytorchReplicaSpecs"].items():
            tpl = rspec.get("template") if isinstance(rspec, dict) else None
            if isinstance(tpl, dict):
                yield (["spec", "pytorchReplicaSpecs", rtype, "template"], ["template"],
                       {"apiVersion": "v1", "kind": "PodTemplate",
                        "metadata": {"name": "check"}, "template": tpl})
    elif doc.get("kind") == "JobSet" and isinstance(spec.get("replicatedJobs"), list):
        for i, rjob in enumerate(spec["replicatedJobs"]):
            tpl = rjob.get("template") if isinstance(rjob, dict) else None
            if isinstance(tpl, dict):
                meta = dict(tpl.get("metadata") or {}, name="check")
                yield (["spec", "replicatedJobs", i, "template"], [],
                       {"apiVersion": "batch/v1", "kind": "Job", **tpl, "metadata": meta})


def _core_errors(doc: dict, k8s_version: str) -> list[str]:
    import kubernetes_validate
    from kubernetes_validate.utils import all_versions

    bundled = [".".join(v.split(".")[:2]) for v in all_versions()]
    if ".".join(k8s_version.lstrip("v").split(".")[:2]) not in bundled:
        raise UserError(f"kubernetes-validate has no schemas for Kubernetes {k8s_version}; "
                        f"pass one it bundles ({bundled[0]} to {bundled[-1]}), e.g. 1.33")
    errors = []
    for prefix, wrapper_prefix, wrapped in _embedded(doc):
        try:
            kubernetes_validate.validate(wrapped, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as e:  # it stops at the first error
            rel = list(e.path)[len(wrapper_prefix):]
            errors.append(f"{field_path(prefix + rel)}: {e.message} "
                          f"(Kubernetes {e.version} core schema)")
    return errors


def _containers(doc: dict):
    for _prefix, _wp, wrapped in _embedded(doc):
        pod = wrapped["template"] if wrapped["kind"] == "PodTemplate" else \
            (wrapped.get("spec") or {}).get("template") or {}
        yield wrapped, (pod.get("spec") or {}), (pod.get("spec") or {}).get("containers") or []


def _rule_errors(doc: dict) -> list[str]:
    """Rules from the training operator's webhook and the Job API that schemas don't encode."""
    errors = []
    spec = doc.get("spec") or {}
    if doc.get("kind") == "PyTorchJob":
        rspecs = spec.get("pytorchReplicaSpecs") or {}
        if "Master" in rspecs and rspecs["Master"].get("replicas") != 1:
            errors.append("spec.pytorchReplicaSpecs.Master.replicas: must be 1")
        if "elasticPolicy" in spec and "Worker" not in rspecs:
            errors.append("spec.pytorchReplicaSpecs.Worker: required with an elasticPolicy")
        if "nProcPerNode" in (spec.get("elasticPolicy") or {}) and "nprocPerNode" in spec:
            errors.append("spec.elasticPolicy.nProcPerNode: deprecated; must not be used "
                          "together with spec.nprocPerNode")
        nproc = spec.get("nprocPerNode", "")
        for _w, _pod, containers in _containers(doc):
            main = [c for c in containers if c.get("name") == "pytorch"]
            if not main:
                errors.append("pod template: the training operator needs a container named "
                              "'pytorch'")
            elif str(nproc).isdigit():
                gpus = ((main[0].get("resources") or {}).get("limits") or {}) \
                    .get("nvidia.com/gpu", 0)
                if str(gpus).isdigit() and int(gpus) < int(nproc):
                    errors.append(f"resources.limits.nvidia.com/gpu: {gpus} GPUs for "
                                  f"nprocPerNode={nproc} processes; give each rank a GPU")
    elif doc.get("kind") == "JobSet":
        for wrapped, pod, _c in _containers(doc):
            if pod.get("restartPolicy") not in ("Never", "OnFailure"):
                errors.append("replicatedJobs[].template.spec.template.spec.restartPolicy: "
                              "a Job's pods need Never or OnFailure")
    return errors


def validation_errors(doc: dict, k8s_version: str = DEFAULT_K8S_VERSION) -> list[str]:
    """Every problem found, one message per problem naming its field; [] means valid."""
    import jsonschema

    if not isinstance(doc, dict) or doc.get("kind") not in SCHEMAS:
        kind = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
        return [f"kind: {kind!r} is not one labkit checks ({', '.join(SCHEMAS)})"]
    validator = jsonschema.Draft7Validator(SCHEMAS[doc["kind"]])
    errors = [f"{field_path(e.absolute_path)}: {e.message}"
              for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path)))]
    errors += _core_errors(doc, k8s_version)
    # The rules read fields by name, so they only run on a structurally valid document.
    return errors or _rule_errors(doc)


def validate(doc: dict, k8s_version: str = DEFAULT_K8S_VERSION) -> None:
    """Raise UserError listing every problem; return quietly when the manifest is valid."""
    errors = validation_errors(doc, k8s_version)
    if errors:
        raise UserError(f"{doc.get('kind', 'manifest')} is not valid:\n  - " +
                        "\n  - ".join(errors))
