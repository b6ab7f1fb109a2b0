"""``modelyard deploy kubernetes``: manifests that run an image built by ``modelyard build``.

Plain dicts, written as YAML, one object per file: a ConfigMap holding the image's
``modelyard.yaml``, a Deployment (readiness on ``/v2/health/ready``, liveness and
start-up on ``/v2/health/live``, resource requests and limits, a non-root read-only
container), a Service, a HorizontalPodAutoscaler and a PodDisruptionBudget; or, with
``kserve=True``, a KServe ``InferenceService`` whose predictor is the same container on
the v2 protocol, beside the ConfigMap.

Secrets are referenced, never written: the metadata store's URL (when the project's
store is not SQLite), API keys, object-store credentials and a Redis URL come from one
Secret by ``secretKeyRef``; ``README.md`` says how to create it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from modelyard.config import Settings
from modelyard.deploy.context import (
    IMAGE_PROJECT,
    IMAGE_UID,
    PORT,
    image_settings,
    resource_name,
)
from modelyard.deploy.healthcheck import READY_PATH
from modelyard.errors import InvalidInputError
from modelyard.registry.entities import ModelVersion
from modelyard.store.urls import is_local_path

__all__ = [
    "LIVE_PATH",
    "DeploySpec",
    "SecretKey",
    "kubernetes_manifests",
    "secret_keys",
    "write_manifests",
]

LIVE_PATH = "/v2/health/live"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_CPU = re.compile(r"^(\d+(\.\d+)?|\d+m)$")
_MEMORY = re.compile(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")


@dataclass(frozen=True)
class DeploySpec:
    """What the command line chose; checked by ``check``."""

    image: str
    replicas: int = 2
    max_replicas: int | None = None
    namespace: str | None = None
    cpu: str = "1"
    memory: str = "1Gi"
    target_cpu_percent: int = 70
    kserve: bool = False

    def check(self) -> None:
        if self.replicas < 1:
            raise InvalidInputError(
                f"Expected --replicas >= 1, got {self.replicas}", loc="--replicas"
            )
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise InvalidInputError(
                f"Expected --max-replicas >= --replicas ({self.replicas}), got {self.max_replicas}",
                loc="--max-replicas",
            )
        if self.namespace is not None and (
            len(self.namespace) > 63 or not _DNS_LABEL.match(self.namespace)
        ):
            raise InvalidInputError(
                "Expected a namespace of lowercase letters, digits and '-' (at most 63, "
                f"starting and ending with a letter or digit), got {self.namespace!r}",
                loc="--namespace",
            )
        if not _CPU.match(self.cpu) or self.cpu in ("0", "0m"):
            raise InvalidInputError(
                f"Expected --cpu as CPUs (1, 1.5) or millicores (500m), got {self.cpu!r}",
                loc="--cpu",
            )
        if not _MEMORY.match(self.memory):
            raise InvalidInputError(
                f"Expected --memory as a quantity (512Mi, 2Gi), got {self.memory!r}",
                loc="--memory",
            )
        if not 1 <= self.target_cpu_percent <= 100:
            raise InvalidInputError(
                f"Expected --target-cpu in 1..100, got {self.target_cpu_percent}",
                loc="--target-cpu",
            )
        if not self.image.strip() or any(c.isspace() for c in self.image):
            raise InvalidInputError(
                f"Expected an image reference, got {self.image!r}", loc="--image"
            )


@dataclass(frozen=True)
class SecretKey:
    """One environment variable the pod reads from the Secret, and why."""

    env: str
    key: str
    optional: bool
    what: str


def _env_key(variable: str) -> str:
    return variable.lower().replace("_", "-")


def secret_keys(settings: Settings) -> list[SecretKey]:
    """The environment the pods take from the Secret: references only, values never read."""
    keys = []
    if not settings.db_url.startswith("sqlite"):
        keys.append(SecretKey("MODELYARD_DB_URL", "db-url", False, "the metadata store's URL"))
    keys.append(
        SecretKey("MODELYARD_API_KEYS", "api-keys", True, "API keys: KEY:predict,KEY2:admin")
    )
    for api_key in settings.serving.api_keys:
        if api_key.key_env:
            keys.append(
                SecretKey(api_key.key_env, _env_key(api_key.key_env), False, f"key {api_key.name}")
            )
    if not is_local_path(settings.artifacts):
        keys.append(SecretKey("MODELYARD_ARTIFACTS", "artifacts", False, "the artifact store URL"))
        if settings.artifacts.startswith(("s3://", "s3a://")):
            for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3"):
                keys.append(SecretKey(variable, _env_key(variable), True, "S3 credentials"))
    if settings.features.online_store.startswith(("redis://", "rediss://")):
        keys.append(
            SecretKey("MODELYARD_ONLINE_STORE", "online-store", False, "the Redis online store")
        )
    return keys


def _meta(name: str, spec: DeploySpec, labels: Mapping[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(labels)}
    if spec.namespace is not None:
        meta["namespace"] = spec.namespace
    return meta


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _container(
    spec: DeploySpec, version: ModelVersion, secret: str, keys: list[SecretKey], name: str
) -> dict[str, Any]:
    env: list[dict[str, Any]] = [{"name": "PORT", "value": str(PORT)}]
    for key in keys:
        ref: dict[str, Any] = {"name": secret, "key": key.key}
        if key.optional:
            ref["optional"] = True
        env.append({"name": key.env, "valueFrom": {"secretKeyRef": ref}})
    resources = {"cpu": spec.cpu, "memory": spec.memory}
    return {
        "name": name,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": env,
        # the CPU limit sizes the workers (one per whole CPU, see modelyard.deploy.cgroup)
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "readinessProbe": _probe(READY_PATH, period=5, failures=3),
        "livenessProbe": _probe(LIVE_PATH, period=10, failures=3),
        # loading, verifying and warming a model may take a while: liveness waits for it
        "startupProbe": _probe(LIVE_PATH, period=5, failures=36),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": IMAGE_UID,
            "runAsGroup": IMAGE_UID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {
                "name": "config",
                "mountPath": f"{IMAGE_PROJECT}/modelyard.yaml",
                "subPath": "modelyard.yaml",
                "readOnly": True,
            },
            {"name": "state", "mountPath": f"{IMAGE_PROJECT}/.modelyard"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def _volumes(config: str) -> list[dict[str, Any]]:
    return [
        {"name": "config", "configMap": {"name": config}},
        {"name": "state", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]


def kubernetes_manifests(
    settings: Settings, version: ModelVersion, spec: DeploySpec
) -> dict[str, dict[str, Any]]:
    """File name -> manifest, in the order to apply them."""
    spec.check()
    name = resource_name(version.name)
    secret = f"{name}-secrets"
    config = f"{name}-config"
    labels = {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/managed-by": "modelyard",
        "modelyard.io/model": resource_name(version.name).removeprefix("modelyard-"),
        "modelyard.io/version": str(version.version),
    }
    selector = {"app.kubernetes.io/name": name}
    keys = secret_keys(settings)
    pod_config = image_settings(settings)
    if not is_local_path(settings.artifacts):
        pod_config.pop("artifacts")  # MODELYARD_ARTIFACTS, from the Secret
    manifests: dict[str, dict[str, Any]] = {
        "configmap.yaml": {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta(config, spec, labels),
            "data": {"modelyard.yaml": yaml.safe_dump(pod_config, sort_keys=False)},
        }
    }
    pod_security = {
        "runAsNonRoot": True,
        "fsGroup": IMAGE_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if spec.kserve:
        container = _container(spec, version, secret, keys, "kserve-container")
        manifests["inferenceservice.yaml"] = {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {
                **_meta(name, spec, labels),
                "annotations": {"serving.kserve.io/deploymentMode": "RawDeployment"},
            },
            "spec": {
                "predictor": {
                    "minReplicas": spec.replicas,
                    "maxReplicas": spec.max_replicas or spec.replicas * 3,
                    "scaleMetric": "cpu",
                    "scaleTarget": spec.target_cpu_percent,
                    "securityContext": pod_security,
                    "containers": [container],
                    "volumes": _volumes(config),
                }
            },
        }
        return manifests
    container = _container(spec, version, secret, keys, "server")
    manifests["deployment.yaml"] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, spec, labels),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": pod_security,
                    # 10 s for requests in flight, up to 15 s to ship the log's tail
                    "terminationGracePeriodSeconds": 45,
                    "containers": [container],
                    "volumes": _volumes(config),
                },
            },
        },
    }
    manifests["service.yaml"] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, spec, labels),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    manifests["hpa.yaml"] = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(name, spec, labels),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": spec.replicas,
            "maxReplicas": spec.max_replicas or spec.replicas * 3,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": spec.target_cpu_percent,
                        },
                    },
                }
            ],
        },
    }
    # one pod may be drained at a time; with one replica that one (never a blocked drain)
    manifests["pdb.yaml"] = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(name, spec, labels),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
    }
    return manifests


def _readme(
    version: ModelVersion, spec: DeploySpec, secret: str, keys: list[SecretKey], files: list[str]
) -> str:
    namespace = f" -n {spec.namespace}" if spec.namespace else ""
    literals = " \\\n  ".join(f"--from-literal={k.key}=..." for k in keys)
    table = "\n".join(
        f"| `{k.key}` | `{k.env}` | {k.what}{' (optional)' if k.optional else ''} |" for k in keys
    )
    return f"""\
# {version.ref} on Kubernetes

Written by `modelyard deploy kubernetes` for the image `{spec.image}` (build it with
`modelyard build {version.ref} --out DIR`, push it where the cluster pulls from).

1. Create the Secret the pods read (values are never written by modelyard):

   ```sh
   kubectl{namespace} create secret generic {secret} \\
     {literals}
   ```

   | key | variable | what |
   |---|---|---|
{table}

2. Apply: `kubectl{namespace} apply {" ".join(f"-f {f}" for f in files)}`

Readiness: `{READY_PATH}` (every model loaded and warmed); liveness and start-up:
`{LIVE_PATH}`. Each pod runs one worker per whole CPU of its limit ({spec.cpu}).
Without a shared metadata store (PostgreSQL in the Secret's `db-url`), each pod keeps
its own SQLite store and prediction log in an emptyDir: fine for serving one version,
but monitoring the fleet as one needs the shared stores (docs/fleet.md).
"""


def write_manifests(
    settings: Settings, version: ModelVersion, spec: DeploySpec, out: Path
) -> list[Path]:
    """Write the manifests and a README into ``out``; the files written."""
    manifests = kubernetes_manifests(settings, version, spec)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for file, manifest in manifests.items():
        path = out / file
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        written.append(path)
    secret = f"{resource_name(version.name)}-secrets"
    readme = out / "README.md"
    readme.write_text(_readme(version, spec, secret, secret_keys(settings), list(manifests)))
    written.append(readme)
    return written
