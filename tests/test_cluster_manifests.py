"""Cluster manifests: generated PyTorchJob/JobSet YAML checked against the REAL upstream CRDs.

The CRD schemas (kubeflow training-operator v1.9.0, JobSet v0.9.1) live in ../shared/crds as
test oracles only. labkit's own validator (manifests_schema) is tested against the same
mutations, so a learner's `labkit manifests --check` agrees with what the cluster would say.
"""

from __future__ import annotations

import argparse
import copy
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from labkit.cluster import manifests as m
from labkit.cluster.manifests_schema import (
    JOBSET_SCHEMA, PYTORCHJOB_SCHEMA, field_path, validation_errors)
from labkit.errors import UserError

jsonschema = pytest.importorskip("jsonschema")

CRD_DIR = Path(__file__).resolve().parents[2] / "shared" / "crds"
CRD_FILES = {"PyTorchJob": "kubeflow.org_pytorchjobs.yaml",
             "JobSet": "jobset.x-k8s.io_jobsets.yaml"}
KINDS = {"pytorchjob": "PyTorchJob", "jobset": "JobSet"}


def _strict(node):
    """Reject unknown fields like the API server's strict field validation (kubectl's default
    --validate=strict) does; a bare structural schema would silently prune them instead."""
    if isinstance(node, dict):
        if (node.get("type") == "object" and "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        for value in node.values():
            _strict(value)
    elif isinstance(node, list):
        for value in node:
            _strict(value)
    return node


@pytest.fixture(scope="module")
def crd_schemas():
    if not CRD_DIR.is_dir():
        pytest.skip(f"upstream CRD schemas not found at {CRD_DIR} (the shared/ folder beside "
                    "the repository); they are the oracle for these tests")
    out = {}
    for kind, name in CRD_FILES.items():
        crd = yaml.load((CRD_DIR / name).read_text(), Loader=yaml.CSafeLoader)
        version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
        out[kind] = version["schema"]["openAPIV3Schema"]
    return out


@pytest.fixture(scope="module")
def crd_validators(crd_schemas):
    return {kind: jsonschema.Draft7Validator(_strict(copy.deepcopy(schema)))
            for kind, schema in crd_schemas.items()}


def crd_errors(validators, doc) -> list[str]:
    return [f"{field_path(e.absolute_path)}: {e.message}"
            for e in validators[doc["kind"]].iter_errors(doc)]


def rich_job(fabric: str, **kw) -> m.ClusterJob:
    """Every optional feature switched on, so the oracle sees every field labkit can write."""
    opts = dict(name="llama-ddp", nodes=4, gpus_per_node=8, fabric=fabric,
                hcas=("mlx5_0", "mlx5_1") if fabric != "tcp" else (),
                rdma_resource="rdma/rdma_shared_device_a" if fabric != "tcp" else None,
                gpu_product="NVIDIA-H100-80GB-HBM3", host_network=fabric == "roce",
                network_attachment="roce-net" if fabric == "roce" else None,
                namespace="training", train_args=("--steps", "100"))
    opts.update(kw)
    return m.ClusterJob(**opts)


def as_applied(doc: dict) -> dict:
    """What kubectl would send: the YAML text parsed back."""
    return yaml.safe_load(m.to_yaml(doc))


def main_container(doc: dict) -> dict:
    if doc["kind"] == "PyTorchJob":
        tpl = next(iter(doc["spec"]["pytorchReplicaSpecs"].values()))["template"]
    else:
        tpl = doc["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    return tpl["spec"]["containers"][0], tpl["spec"]


@pytest.mark.parametrize("fabric", m.FABRICS)
@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("elastic", [False, True], ids=["static", "elastic"])
def test_generated_manifest_passes_real_crd_and_own_validator(crd_validators, kind, fabric,
                                                              elastic):
    job = rich_job(fabric, min_nodes=2 if elastic else None)
    doc = as_applied(m.manifest(job, kind))
    assert doc["kind"] == KINDS[kind]
    assert crd_errors(crd_validators, doc) == []
    assert validation_errors(doc) == []


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_minimal_single_node_manifest_is_valid(crd_validators, kind):
    doc = as_applied(m.manifest(m.ClusterJob(nodes=1, gpus_per_node=1, fabric="tcp"), kind))
    assert crd_errors(crd_validators, doc) == []
    assert validation_errors(doc) == []
    if kind == "pytorchjob":  # one node: a Master and no Worker (Worker replicas >= 1)
        assert list(doc["spec"]["pytorchReplicaSpecs"]) == ["Master"]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_pod_has_gpus_shm_tolerations_and_fabric_settings(kind):
    for fabric in m.FABRICS:
        job = rich_job(fabric)
        container, pod = main_container(as_applied(m.manifest(job, kind)))
        env = {e["name"]: e["value"] for e in container["env"]}
        limits = container["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == 8
        assert env["NCCL_DEBUG"] == "INFO" and env["NCCL_SOCKET_IFNAME"] == "eth0"
        shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
        assert shm["emptyDir"]["medium"] == "Memory"
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists",
                "effect": "NoSchedule"} in pod["tolerations"]
        assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        caps = (container.get("securityContext") or {}).get("capabilities", {}).get("add", [])
        if fabric == "tcp":
            assert env["NCCL_IB_DISABLE"] == "1"
            assert "NCCL_IB_HCA" not in env and "IPC_LOCK" not in caps
            assert not any(k.startswith("rdma/") for k in limits)
        else:
            assert env["NCCL_IB_HCA"] == "mlx5_0,mlx5_1"
            assert env["NCCL_NET_GDR_LEVEL"] == "PHB" and "IPC_LOCK" in caps
            assert limits["rdma/rdma_shared_device_a"] == 1
            assert "NCCL_IB_DISABLE" not in env
        assert ("NCCL_IB_GID_INDEX" in env) == (fabric == "roce")
        if fabric == "roce":
            assert env["NCCL_IB_GID_INDEX"] == "3"
            assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"


def test_rdma_count_gid_override_and_auto_gdr():
    job = m.ClusterJob(fabric="roce", rdma_resource="nvidia.com/hostdev", rdma_count=4,
                       gid_index=-1, gdr_level=None, host_network=True)
    container, _pod = main_container(m.jobset(job))
    env = {e["name"]: e["value"] for e in container["env"]}
    assert container["resources"]["limits"]["nvidia.com/hostdev"] == 4
    assert env["NCCL_IB_GID_INDEX"] == "-1" and "NCCL_NET_GDR_LEVEL" not in env


# --- validation catches mistakes: both the real CRD and labkit's own validator -------------

def _pytorchjob():
    return as_applied(m.pytorchjob(rich_job("ib")))


def _jobset():
    return as_applied(m.jobset(rich_job("ib")))


def _container(doc):
    return main_container(doc)[0]


def _rename(d: dict, old: str, new: str):
    d[new] = d.pop(old)


MISSPELLINGS = [  # (make the document, mutate it, the misspelled field the errors must name)
    (_pytorchjob, lambda d: _rename(_container(d), "volumeMounts", "volumeMount"),
     "volumeMount"),
    (_pytorchjob, lambda d: _rename(d["spec"], "runPolicy", "runPolicies"), "runPolicies"),
    (_jobset, lambda d: _rename(d["spec"]["failurePolicy"], "maxRestarts", "maxRestart"),
     "maxRestart"),
    (_jobset, lambda d: _rename(main_container(d)[1], "tolerations", "toleration"),
     "toleration"),
]


@pytest.mark.parametrize("make,mutate,field", MISSPELLINGS,
                         ids=[f for _m, _u, f in MISSPELLINGS])
def test_misspelled_field_is_caught_and_named(crd_validators, make, mutate, field):
    doc = make()
    mutate(doc)
    real = crd_errors(crd_validators, doc)
    ours = validation_errors(doc)
    assert real and any(f"'{field}'" in e for e in real), real
    assert ours and any(f"'{field}'" in e for e in ours), ours


WRONG_TYPES = [  # (make, mutate, the field path every message must name)
    # The CRD says nprocPerNode is a string ("auto", "8"): an int is a classic mistake.
    (_pytorchjob, lambda d: d["spec"].__setitem__("nprocPerNode", 8), "spec.nprocPerNode"),
    (_jobset, lambda d: d["spec"]["replicatedJobs"][0].__setitem__("replicas", "1"),
     "spec.replicatedJobs[0].replicas"),
    (_pytorchjob, lambda d: _container(d)["ports"][0].__setitem__("containerPort", "29500"),
     "containers[0].ports[0].containerPort"),
    (_jobset, lambda d: main_container(d)[1].__setitem__("hostNetwork", "yes"),
     "spec.hostNetwork"),
]


@pytest.mark.parametrize("make,mutate,path", WRONG_TYPES, ids=[p for _m, _u, p in WRONG_TYPES])
def test_wrong_type_is_caught_and_names_the_field(crd_validators, make, mutate, path):
    doc = make()
    mutate(doc)
    real = crd_errors(crd_validators, doc)
    ours = validation_errors(doc)
    assert any(path in e and "is not of type" in e for e in real), real
    assert any(path in e and "is not of type" in e for e in ours), ours


def test_own_validator_catches_what_the_crd_schema_cannot(crd_validators):
    # pytorchReplicaSpecs is a free-form map in the CRD: "Workers" passes the schema and is
    # only rejected by the operator's webhook. labkit's schema names the allowed keys.
    doc = _pytorchjob()
    _rename(doc["spec"]["pytorchReplicaSpecs"], "Worker", "Workers")
    assert crd_errors(crd_validators, doc) == []
    assert any("'Workers'" in e for e in validation_errors(doc))
    # Operator rules no schema states: one Master; a GPU for every rank.
    doc = _pytorchjob()
    doc["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = 2
    assert any("Master.replicas: must be 1" in e for e in validation_errors(doc))
    doc = _pytorchjob()
    _container(doc)["resources"]["limits"]["nvidia.com/gpu"] = 4
    assert any("nvidia.com/gpu" in e and "nprocPerNode=8" in e for e in validation_errors(doc))


def _walk(own: dict, real: dict, path: str):
    """Yield (path, problem) where labkit's schema claims a field the real CRD lacks or types
    differently: the own schema must be a faithful subset of the upstream one."""
    if "type" in own and "type" in real and own["type"] != real["type"]:
        yield path, f"type {own['type']} vs CRD {real['type']}"
    props = own.get("properties") or {}
    for key, sub in props.items():
        real_props = real.get("properties")
        if real_props is not None:
            if key not in real_props:
                yield f"{path}.{key}", "not in the CRD"
                continue
            yield from _walk(sub, real_props[key], f"{path}.{key}")
        elif isinstance(real.get("additionalProperties"), dict):  # a map, e.g. replica specs
            yield from _walk(sub, real["additionalProperties"], f"{path}.{key}")
    if "items" in own and "items" in real:
        yield from _walk(own["items"], real["items"], f"{path}[]")


@pytest.mark.parametrize("kind,own", [("PyTorchJob", PYTORCHJOB_SCHEMA),
                                      ("JobSet", JOBSET_SCHEMA)])
def test_own_schema_is_a_subset_of_the_real_crd(crd_schemas, kind, own):
    own_spec, real = own["properties"]["spec"], crd_schemas[kind]["properties"]["spec"]
    assert list(_walk(own_spec, real, "spec")) == []


def test_unsupported_kubernetes_version_is_a_user_error():
    with pytest.raises(UserError, match="1.99"):
        validation_errors(_pytorchjob(), k8s_version="1.99")


# --- torchrun command lines -----------------------------------------------------------------

def _parse_torchrun(argv):
    from torch.distributed.run import get_args_parser

    assert argv[0] == "torchrun"
    return get_args_parser().parse_args(argv[1:])


@pytest.mark.parametrize("min_nodes", [None, 2])
def test_torchrun_lines_agree_with_each_other_and_with_the_manifests(min_nodes):
    job = rich_job("ib", min_nodes=min_nodes, rdzv_port=29600)
    hosts = ["gpu-a", "gpu-b", "gpu-c", "gpu-d"]
    cmds = m.torchrun_commands(job, hosts)
    assert [c.host for c in cmds] == hosts
    parsed = [_parse_torchrun(c.argv) for c in cmds]
    expected_nnodes = "2:4" if min_nodes else "4"
    for c, a in zip(cmds, parsed):
        assert a.rdzv_endpoint == "gpu-a:29600" and a.rdzv_backend == "c10d"
        assert a.rdzv_id == parsed[0].rdzv_id == "llama-ddp"
        assert a.nnodes == expected_nnodes and a.nproc_per_node == "8"
        assert a.module and a.training_script == m.DEFAULT_MODULE
        assert a.training_script_args == ["--steps", "100"]
        assert c.env == cmds[0].env == m.nccl_env(job)
        # The pasted shell line is exactly env assignments followed by the argv.
        words = shlex.split(c.shell())
        n_env = len(c.env)
        assert dict(w.split("=", 1) for w in words[:n_env]) == c.env
        assert words[n_env:] == c.argv
    # Kubernetes pods run the same command; only the rendezvous host differs.
    for kind, host in [("pytorchjob", f"llama-ddp-{'worker' if min_nodes else 'master'}-0"),
                       ("jobset", "llama-ddp-node-0-0.llama-ddp")]:
        pod_argv = main_container(m.manifest(job, kind))[0]["command"]
        assert pod_argv == m.torchrun_argv(job, host)
        assert _parse_torchrun(pod_argv).rdzv_endpoint == f"{host}:29600"
        assert pod_argv[:4] + pod_argv[5:] == cmds[0].argv[:4] + cmds[0].argv[5:]
    doc = m.pytorchjob(job)
    if min_nodes:  # the operator's elastic env must agree with the explicit torchrun flags
        ep = doc["spec"]["elasticPolicy"]
        assert (ep["minReplicas"], ep["maxReplicas"], ep["rdzvPort"]) == (2, 4, 29600)
    else:
        replicas = {k: v["replicas"] for k, v in doc["spec"]["pytorchReplicaSpecs"].items()}
        assert replicas == {"Master": 1, "Worker": 3}


def test_torchrun_script_has_one_line_per_node():
    text = m.torchrun_script(m.ClusterJob(nodes=3, fabric="tcp"))
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert len(lines) == 3 and all("torchrun " in ln for ln in lines)
    assert all("--rdzv-endpoint=node0:29500" in ln and "NCCL_IB_DISABLE=1" in ln
               for ln in lines)
    with pytest.raises(UserError, match="one per node"):
        m.torchrun_commands(m.ClusterJob(nodes=3), ["a", "b"])


@pytest.mark.parametrize("kw,match", [
    (dict(name="Llama_DDP"), "DNS label"), (dict(fabric="ethernet"), "fabric"),
    (dict(min_nodes=5, nodes=4), "min-nodes"), (dict(gdr_level="NVL"), "GDR"),
    (dict(shm_size="lots"), "quantity"), (dict(gpus_per_node=0), "at least 1")])
def test_bad_parameters_are_user_errors(kw, match):
    with pytest.raises(UserError, match=match):
        m.ClusterJob(**kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PROBE = """\
import torch, torch.distributed as dist
dist.init_process_group("gloo")
x = torch.tensor([float(dist.get_rank())])
dist.all_reduce(x)
print(f"PROBE rank={dist.get_rank()} world={dist.get_world_size()} sum={x.item():g}", flush=True)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_generated_torchrun_lines_really_rendezvous(tmp_path):
    """Two "nodes" on loopback run the generated lines; c10d must join them into one job."""
    (tmp_path / "rdzv_probe.py").write_text(PROBE)
    job = m.ClusterJob(name="probe", nodes=2, gpus_per_node=1, fabric="tcp", ifname="lo",
                       rdzv_port=_free_port(), max_restarts=0, module="rdzv_probe")
    cmds = m.torchrun_commands(job, ["127.0.0.1", "127.0.0.1"])
    venv_bin = str(Path(sys.executable).parent)
    env = dict(os.environ, PYTHONPATH=str(tmp_path), GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1",
               PATH=venv_bin + os.pathsep + os.environ.get("PATH", ""))
    procs = [subprocess.Popen(c.argv, env={**env, **c.env}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for c in cmds]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=180)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outs)
    probes = sorted(ln for out in outs for ln in out.splitlines() if ln.startswith("PROBE"))
    assert probes == ["PROBE rank=0 world=2 sum=1", "PROBE rank=1 world=2 sum=1"]


# --- CLI --------------------------------------------------------------------------------------

@pytest.fixture()
def cli():
    from labkit.cluster.cli import register

    parser = argparse.ArgumentParser(prog="labkit")
    sub = parser.add_subparsers()
    register(sub)

    def run(*argv):
        args = parser.parse_args(["manifests", *argv])
        return args.func(args)

    run.parser = parser
    run.sub = sub
    return run


def test_cli_writes_a_valid_manifest_and_check_rejects_a_broken_one(cli, tmp_path, capsys,
                                                                   crd_validators):
    out = tmp_path / "job.yaml"
    rc = cli("--kind", "pytorchjob", "--nodes", "3", "--gpus-per-node", "4", "--fabric",
             "roce", "--hca", "mlx5_0,mlx5_1", "--host-network", "--ifname", "bond0",
             "--rdma-resource", "nvidia.com/hostdev=2", "--gpu-product",
             "NVIDIA-H100-80GB-HBM3", "--validate", "--out", str(out))
    err = capsys.readouterr().err
    assert rc == 0 and "valid PyTorchJob" in err
    text = out.read_text()
    assert text.startswith("# NCCL_DEBUG:")  # the header explains the variables
    doc = yaml.safe_load(text)
    assert crd_errors(crd_validators, doc) == []
    assert doc["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2
    container = _container(doc)
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 4, "nvidia.com/hostdev": 2}
    # A hand edit with a typo: --check fails and names the field.
    _rename(container, "securityContext", "securityContxt")
    out.write_text(yaml.safe_dump(doc))
    assert cli("--check", str(out)) == 1
    assert "securityContxt" in capsys.readouterr().err


def test_cli_torchrun_kind_prints_one_command_per_host(cli, capsys):
    assert cli("--kind", "torchrun", "--nodes", "2", "--gpus-per-node", "8", "--fabric", "ib",
               "--hca", "mlx5_0", "--hosts", "gpu-a,gpu-b", "--train-args", "--steps 10") == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("NCCL_")]
    assert len(lines) == 2
    assert all("--rdzv-endpoint=gpu-a:29500" in ln and ln.endswith("--steps 10")
               for ln in lines)


def test_cli_help_teaches_every_nccl_variable_and_explain_prints_prerequisites(cli, capsys):
    help_text = cli.sub.choices["manifests"].format_help()
    for var in m.NCCL_VARIABLES:
        assert var in help_text
    assert "rdma/rdma_shared_device_a" in help_text and "examples:" in help_text
    assert cli("--explain") == 0
    out = capsys.readouterr().out
    for needle in ["nvidia.com/gpu", "nvidia.com/gpu.product", "rdma/rdma_shared_device_a",
                   "nvidia.com/hostdev", "nvidia-peermem", "IPC_LOCK", "ibv_devinfo",
                   "nvidia-smi topo -m", "kubectl describe node", "DCGM"]:
        assert needle in out, needle


def test_cli_rejects_a_bad_rdma_resource(cli):
    with pytest.raises(UserError, match="NAME=COUNT"):
        cli("--rdma-resource", "rdma/x=many")
