"""``modelyard deploy kubernetes``: manifests valid for Kubernetes 1.31, secrets by reference.

Every object is validated with ``kubernetes_validate`` against the 1.31 schemas in
strict mode (unknown fields refused). The KServe ``InferenceService`` is a CRD whose
schema is not available offline: it is checked against ``INFERENCE_SERVICE_SCHEMA``
below, written from the CRD fields the manifest uses (serving.kserve.io/v1beta1:
``spec.predictor`` with ``minReplicas``, ``maxReplicas``, ``scaleMetric``,
``scaleTarget``, ``containers`` (a core/v1 Container, validated as such through a
Deployment), ``volumes``, ``securityContext``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import msgspec
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.config import ApiKeySettings
from modelyard.deploy.kubernetes import DeploySpec, kubernetes_manifests, secret_keys
from modelyard.registry import ModelRegistry

from .conftest import DeployProject

K8S_VERSION = "1.31.0"
PASSWORD = "hunter2-Xq9-secret"
PG_WITH_PASSWORD = f"postgresql+psycopg://alice:{PASSWORD}@db.internal:5432/ml"

INFERENCE_SERVICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1beta1"},
        "kind": {"const": "InferenceService"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z]([-a-z0-9]*[a-z0-9])?$"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "additionalProperties": False,
        },
        "spec": {
            "type": "object",
            "required": ["predictor"],
            "additionalProperties": False,
            "properties": {
                "predictor": {
                    "type": "object",
                    "required": ["containers"],
                    "additionalProperties": False,
                    "properties": {
                        "minReplicas": {"type": "integer", "minimum": 0},
                        "maxReplicas": {"type": "integer", "minimum": 0},
                        "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
                        "scaleTarget": {"type": "integer", "minimum": 1},
                        "securityContext": {"type": "object"},
                        "volumes": {"type": "array", "items": {"type": "object"}},
                        "containers": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["name", "image"],
                                "properties": {"name": {"const": "kserve-container"}},
                            },
                        },
                    },
                }
            },
        },
    },
}


def _version(project: DeployProject) -> Any:
    with ModelRegistry(project.settings) as registry:
        return registry.get_version(project.ref)


def _validate_all(manifests: dict[str, dict[str, Any]]) -> None:
    for file, manifest in manifests.items():
        if manifest["kind"] == "InferenceService":
            jsonschema.validate(manifest, INFERENCE_SERVICE_SCHEMA)
            # its container is a core/v1 Container: validate it as one, in a Deployment
            predictor = manifest["spec"]["predictor"]
            as_deployment = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": manifest["metadata"]["name"]},
                "spec": {
                    "selector": {"matchLabels": {"a": "b"}},
                    "template": {
                        "metadata": {"labels": {"a": "b"}},
                        "spec": {
                            "containers": predictor["containers"],
                            "volumes": predictor["volumes"],
                            "securityContext": predictor["securityContext"],
                        },
                    },
                },
            }
            kubernetes_validate.validate(as_deployment, K8S_VERSION, strict=True)
        else:
            try:
                kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:  # name the file
                raise AssertionError(f"{file}: {exc}") from exc


def _by_kind(manifests: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["kind"]: m for m in manifests.values()}


def test_the_cli_writes_valid_manifests_with_probes_resources_hpa_pdb_configmap(
    cli: Any, deploy_project: DeployProject, tmp_path: Path
) -> None:
    out = tmp_path / "k8s"
    result = cli(
        "deploy", "kubernetes", "churn/3", "--replicas", "3", "--namespace", "ml",
        "--cpu", "2", "--memory", "1536Mi", "--out", str(out), "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    files = sorted(Path(p).name for p in result.json()["files"])
    assert files == [
        "README.md", "configmap.yaml", "deployment.yaml", "hpa.yaml", "pdb.yaml", "service.yaml",
    ]  # fmt: skip
    manifests = {f: yaml.safe_load((out / f).read_text()) for f in files if f.endswith(".yaml")}
    _validate_all(manifests)
    kinds = _by_kind(manifests)
    assert {m["metadata"]["namespace"] for m in manifests.values()} == {"ml"}
    deployment = kinds["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "modelyard-churn:3"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "1536Mi"}
    assert container["resources"]["limits"]["cpu"] == "2"  # the workers follow it
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # the Service, HPA and PDB select the Deployment's pods
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert kinds["Service"]["spec"]["selector"] == selector
    assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 9)
    # the ConfigMap holds the image's modelyard.yaml, mounted over the image's
    config = yaml.safe_load(kinds["ConfigMap"]["data"]["modelyard.yaml"])
    assert config["name"] == "shop"
    assert "db_url" not in config
    assert config["models"]["trusted_types"] == list(deploy_project.settings.models.trusted_types)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/srv/modelyard/modelyard.yaml"]["subPath"] == "modelyard.yaml"
    # a SQLite project: no database Secret (each pod its own store), API keys optional
    env = {e["name"]: e for e in container["env"]}
    assert "MODELYARD_DB_URL" not in env
    assert env["MODELYARD_API_KEYS"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_secrets_are_references_never_values(deploy_project: DeployProject) -> None:
    """A PostgreSQL URL with a password, an API key variable, S3 and Redis: none leak."""
    settings = msgspec.structs.replace(
        deploy_project.settings,
        db_url=PG_WITH_PASSWORD,
        artifacts=f"s3://models/prod?password={PASSWORD}",
        features=msgspec.structs.replace(
            deploy_project.settings.features, online_store=f"redis://:{PASSWORD}@cache:6379/0"
        ),
        serving=msgspec.structs.replace(
            deploy_project.settings.serving,
            api_keys=[ApiKeySettings(name="ci", scopes=["predict"], key_env="SHOP_CI_KEY")],
        ),
    )
    version = _version(deploy_project)
    for kserve in (False, True):
        manifests = kubernetes_manifests(
            settings, version, DeploySpec(image="registry.local/churn:3", kserve=kserve)
        )
        _validate_all(manifests)
        text = yaml.safe_dump_all(list(manifests.values()))
        assert PASSWORD not in text
        assert "alice" not in text and "db.internal" not in text
        containers = (
            _by_kind(manifests)["InferenceService"]["spec"]["predictor"]["containers"]
            if kserve
            else _by_kind(manifests)["Deployment"]["spec"]["template"]["spec"]["containers"]
        )
        env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in containers[0]["env"]
               if "valueFrom" in e}  # fmt: skip
        assert env["MODELYARD_DB_URL"] == {"name": "modelyard-churn-secrets", "key": "db-url"}
        assert env["SHOP_CI_KEY"]["key"] == "shop-ci-key"
        assert env["MODELYARD_ARTIFACTS"]["key"] == "artifacts"
        assert env["MODELYARD_ONLINE_STORE"]["key"] == "online-store"
        assert env["AWS_SECRET_ACCESS_KEY"]["optional"] is True
        # every value in the pod's environment is a reference or a plain port
        plain = [e for e in containers[0]["env"] if "value" in e]
        assert plain == [{"name": "PORT", "value": "8080"}]
        config = yaml.safe_load(_by_kind(manifests)["ConfigMap"]["data"]["modelyard.yaml"])
        assert "artifacts" not in config  # from the Secret: its URL may hold credentials


def test_kserve_writes_an_inference_service_on_the_v2_health_endpoints(
    cli: Any, tmp_path: Path
) -> None:
    out = tmp_path / "kserve"
    result = cli("deploy", "kubernetes", "churn/3", "--kserve", "--replicas", "2",
                 "--out", str(out))  # fmt: skip
    assert result.code == 0, result.err
    written = sorted(p.name for p in out.iterdir())
    assert written == ["README.md", "configmap.yaml", "inferenceservice.yaml"]
    manifests = {f: yaml.safe_load((out / f).read_text()) for f in written if f != "README.md"}
    _validate_all(manifests)
    predictor = manifests["inferenceservice.yaml"]["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["ports"][0]["containerPort"] == 8080
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 6)


@pytest.mark.parametrize(
    ("args", "loc"),
    [
        (["--replicas", "0"], "--replicas"),
        (["--namespace", "Bad_NS"], "--namespace"),
        (["--cpu", "two"], "--cpu"),
        (["--memory", "lots"], "--memory"),
        (["--replicas", "4", "--max-replicas", "2"], "--max-replicas"),
        (["--target-cpu", "0"], "--target-cpu"),
    ],
)
def test_bad_options_exit_2_with_one_line_naming_the_option(
    cli: Any, tmp_path: Path, args: list[str], loc: str
) -> None:
    result = cli("deploy", "kubernetes", "churn/3", "--out", str(tmp_path / "k"), *args)
    assert result.code == 2
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and loc in lines[0], result.err
    assert "Traceback" not in result.err
    assert not (tmp_path / "k").exists()


def test_an_unknown_version_exits_2(cli: Any, tmp_path: Path) -> None:
    result = cli("deploy", "kubernetes", "churn/9", "--out", str(tmp_path / "k"))
    assert result.code == 2 and "churn" in result.err


@pytest.fixture(scope="module")
def served_version(deploy_project: DeployProject) -> Any:
    return _version(deploy_project)


@settings(max_examples=15, deadline=None)
@given(
    replicas=st.integers(1, 50),
    cpu=st.one_of(st.integers(1, 64).map(str), st.integers(1, 64000).map(lambda m: f"{m}m")),
    memory=st.sampled_from(["256Mi", "1Gi", "1.5Gi", "2G", "512000Ki"]),
    namespace=st.one_of(st.none(), st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\Z")),
    name=st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,80}\Z"),
    kserve=st.booleans(),
)
def test_generated_specs_and_model_names_give_valid_manifests(
    deploy_project: DeployProject,
    served_version: Any,
    replicas: int,
    cpu: str,
    memory: str,
    namespace: str | None,
    name: str,
    kserve: bool,
) -> None:
    """Any accepted option set and model name validates (names made DNS-safe, <= 63)."""
    version = dataclasses.replace(served_version, name=name)
    spec = DeploySpec(image="img:1", replicas=replicas, namespace=namespace, cpu=cpu,
                      memory=memory, kserve=kserve)  # fmt: skip
    manifests = kubernetes_manifests(deploy_project.settings, version, spec)
    _validate_all(manifests)
    for manifest in manifests.values():
        assert len(manifest["metadata"]["name"]) <= 63
        for value in manifest["metadata"]["labels"].values():
            assert len(value) <= 63


def test_secret_keys_of_a_sqlite_project_hold_no_database_url(
    deploy_project: DeployProject,
) -> None:
    names = [k.env for k in secret_keys(deploy_project.settings)]
    assert names == ["MODELYARD_API_KEYS"]
