"""The Kubernetes manifests, validated offline: each overlay rendered by kustomize, every
core resource against Kubernetes' own schemas (`kubernetes-validate`, strict), KafkaTopic
and ScaledObject against their operators' CRD schemas kept in k8s/schemas/, and what our
services need of them (stable scorer identity, probes, limits, non-root, topics as
declared in fraudstream/topics.py, autoscaling capped at the partition count)."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from fraudstream.settings import CommonSettings
from fraudstream.topics import TOPICS

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAYS = ("dev", "production")
KUBERNETES_VERSION = "1.33.0"  # the oldest minor release still supported upstream
CRDS = {
    ("kafka.strimzi.io/v1", "KafkaTopic"): K8S / "schemas" / "strimzi-1.2.0-kafkatopics.yaml",
    ("keda.sh/v1alpha1", "ScaledObject"): K8S / "schemas" / "keda-v2.20.2-scaledobjects.yaml",
}
WORKLOADS = {"Deployment", "StatefulSet", "Job"}
SERVING_IMAGE, TRAINER_IMAGE = "fraudstream", "fraudstream-trainer"


@functools.cache
def _rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    # `make install` puts it beside the venv's python; `make test` does not activate the venv.
    binary = shutil.which("kustomize", path=str(Path(sys.executable).parent))
    binary = binary or shutil.which("kustomize")
    if binary is None:
        pytest.fail("kustomize not found: `make install` builds it into .venv/bin (needs Go)")
    out = subprocess.run([binary, "build", str(K8S / "overlays" / overlay)], capture_output=True,
                         text=True, timeout=60, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def _of(overlay: str, kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _rendered(overlay) if d["kind"] == kind}


def _pod(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def _crd_schema(path: Path, version: str) -> dict[str, Any]:
    crd = yaml.safe_load(path.read_text())
    (found,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema: dict[str, Any] = found["schema"]["openAPIV3Schema"]
    return schema


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_resource_passes_its_schema(overlay: str) -> None:
    for doc in _rendered(overlay):
        where = f"{overlay}: {doc['kind']} {doc['metadata']['name']}"
        crd = CRDS.get((doc["apiVersion"], doc["kind"]))
        if crd is None:
            try:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{where}: {exc.message} at {list(exc.path)}")
            continue
        schema = _crd_schema(crd, doc["apiVersion"].rsplit("/", 1)[1])
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=str)
        assert not errors, f"{where}: {errors[0].message} at {list(errors[0].path)}"


def test_the_crd_check_can_fail() -> None:
    topic = next(iter(_of("production", "KafkaTopic").values()))
    broken = {**topic, "spec": {**topic["spec"], "partitions": "six"}}
    schema = _crd_schema(CRDS[("kafka.strimzi.io/v1", "KafkaTopic")], "v1")
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workloads_are_probed_limited_and_non_root(overlay: str) -> None:
    docs = [d for d in _rendered(overlay) if d["kind"] in WORKLOADS]
    assert {d["metadata"]["name"] for d in docs} >= {
        "fraudstream-scorer", "fraudstream-drift-monitor", "fraudstream-trainer",
        "fraudstream-archiver", "fraudstream-first-model", "fraudstream-simulator",
        "fraudstream-review",
    }  # fmt: skip
    for doc in docs:
        pod = _pod(doc)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            where = f"{doc['metadata']['name']}/{container['name']}"
            assert {"cpu", "memory"} <= container["resources"]["limits"].keys(), where
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, f"{where}: a read-only root needs a /tmp volume"
            image = container["image"].rsplit("/", 1)[-1].split(":")[0]
            trains = container["args"][0] in {"train", "trainer"}
            assert image == (TRAINER_IMAGE if trains else SERVING_IMAGE), where
            long_running = doc["kind"] != "Job" and container["args"][0] != "simulate"
            if long_running:
                assert container["startupProbe"]["httpGet"]["path"] == "/healthz", where
                assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", where
                assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", where
                assert doc["spec"]["template"]["metadata"]["annotations"][
                    "prometheus.io/port"] == "9400", where  # fmt: skip


def test_scorers_have_a_stable_identity_and_a_disruption_budget() -> None:
    scorer = _of("production", "StatefulSet")["fraudstream-scorer"]
    (container,) = _pod(scorer)["containers"]
    env = {e["name"]: e for e in container.get("env", [])}
    assert env["FRAUD_SCORER_INSTANCE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    budget = _of("production", "PodDisruptionBudget")["fraudstream-scorer"]
    assert budget["spec"]["selector"] == scorer["spec"]["selector"]
    assert budget["spec"]["maxUnavailable"] == 1


def test_shared_volumes_exist_and_only_the_trainer_writes_the_registry() -> None:
    claims = set(_of("production", "PersistentVolumeClaim"))
    writers = set()
    for doc in (d for d in _rendered("production") if d["kind"] in WORKLOADS):
        volumes = {v["name"]: v for v in _pod(doc)["volumes"]}
        for container in _pod(doc)["containers"]:
            for mount in container["volumeMounts"]:
                claim = volumes[mount["name"]].get("persistentVolumeClaim")
                if claim is None:
                    continue
                assert claim["claimName"] in claims, doc["metadata"]["name"]
                if claim["claimName"] == "fraudstream-models" and not mount.get("readOnly"):
                    writers.add(doc["metadata"]["name"])
    assert writers == {"fraudstream-trainer", "fraudstream-first-model"}


def test_kafka_topics_match_the_declared_topics() -> None:
    config = _of("production", "ConfigMap")["fraudstream-config"]["data"]
    settings = CommonSettings(topic_partitions=int(config["FRAUD_TOPIC_PARTITIONS"]))
    topics = {d["spec"]["topicName"]: d["spec"] for d in _of("production", "KafkaTopic").values()}
    assert set(topics) == {spec.name(settings) for spec in TOPICS}
    for spec in TOPICS:
        declared = topics[spec.name(settings)]
        assert declared["partitions"] == spec.partition_count(settings), spec.setting
        assert {k: str(declared["config"][k]) for k in spec.configs()} == spec.configs()


def test_autoscaling_follows_lag_up_to_the_partition_count() -> None:
    config = _of("production", "ConfigMap")["fraudstream-config"]["data"]
    scaled = _of("production", "ScaledObject")["fraudstream-scorer"]["spec"]
    assert scaled["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet",
                                        "name": "fraudstream-scorer"}  # fmt: skip
    assert scaled["maxReplicaCount"] == int(config["FRAUD_TOPIC_PARTITIONS"])
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "kafka"
    defaults = CommonSettings()
    assert trigger["metadata"]["topic"] == defaults.topic_transactions
    assert trigger["metadata"]["consumerGroup"] == "fraud-scorer"
    assert trigger["metadata"]["bootstrapServers"] == config["KAFKA_BOOTSTRAP_SERVERS"]


def test_dev_creates_topics_by_job_and_runs_the_simulator() -> None:
    assert "fraudstream-topics" in _of("dev", "Job")
    assert not _of("dev", "KafkaTopic")
    assert not _of("dev", "ScaledObject")
    assert _of("dev", "Deployment")["fraudstream-simulator"]["spec"]["replicas"] == 1
    assert _of("production", "Deployment")["fraudstream-simulator"]["spec"]["replicas"] == 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmap_points_at_existing_infrastructure_and_holds_no_secret(overlay: str) -> None:
    data = _of(overlay, "ConfigMap")["fraudstream-config"]["data"]
    assert {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "FRAUD_METRICS_HOST"} <= data.keys()
    assert "@" not in data["REDIS_URL"], "credentials belong in fraudstream-secrets"
    assert not any("PASSWORD" in key for key in data)
    assert not _of(overlay, "StatefulSet").keys() - {"fraudstream-scorer"}, (
        "k8s/ must not run its own Kafka or Redis"
    )
