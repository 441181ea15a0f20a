"""The fastapi bake's Kubernetes manifests (deploy/kubernetes/): what `kubectl apply -k` applies,
valid against the schemas of a current Kubernetes, passing checkov with every skip explained,
consistent with the app (routes, ports, drain, connection budget); the release order in the
README, and the baked CI job that runs it on kind."""

import ast
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from local_extensions import kubernetes_name

from .baking import TEMPLATE, load_yaml

KUBECTL = str(Path(sys.executable).with_name("kubectl"))
# checkov lives in an environment of its own beside the template's (Makefile, pyproject.toml).
CHECKOV = str(Path(sys.executable).parents[1] / "checkov" / "bin" / "checkov")
# The only kinds `kubectl apply -k` applies by default, and what the opt-in components add.
KINDS = {"ServiceAccount", "Service", "Deployment", "Job", "PodDisruptionBudget", "NetworkPolicy"}
COMPONENT_KINDS = {"HorizontalPodAutoscaler", "ServiceMonitor"}
# checkov's findings the manifests keep, each with its reason in the object's annotations.
EXPLAINED = {"CKV_K8S_15", "CKV_K8S_43"}
# A default PostgreSQL: max_connections 100, 3 reserved; a migration takes 2 (core/budget.py).
SERVER_CONNECTIONS, MIGRATION_CONNECTIONS = 97, 2
DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def render(directory: Path) -> list[dict[str, Any]]:
    """What `kubectl apply -k directory` would apply, as kubectl's own kustomize renders it."""
    result = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = [item["kind"] for item in objects]
    assert len(kinds) == len(set(kinds)), kinds
    return {item["kind"]: item for item in objects}


def with_components(project: Path, target: Path) -> Path:
    """A copy of the bake's deploy/kubernetes with both components on and the `replicas` entry
    deleted, as their comments tell the user to do."""
    shutil.copytree(project / "deploy" / "kubernetes", target)
    kustomization = load_yaml(target / "kustomization.yaml")
    kustomization["components"] = ["autoscaling", "servicemonitor"]
    del kustomization["replicas"]
    (target / "kustomization.yaml").write_text(yaml.safe_dump(kustomization), encoding="utf-8")
    return target


@pytest.fixture(scope="module")
def project(cookies_session: Any) -> Path:
    """A project baked with the web service (read-only)."""
    result = cookies_session.bake(extra_context={"web_framework": "fastapi"})
    assert result.exception is None, result.exception
    return Path(result.project_path)


@pytest.fixture(scope="module")
def objects(project: Path) -> dict[str, dict[str, Any]]:
    """The rendered objects of the default kustomization, by kind."""
    return by_kind(render(project / "deploy" / "kubernetes"))


@pytest.fixture(scope="module")
def extended(project: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The rendered objects with the autoscaling and servicemonitor components, by kind."""
    return by_kind(render(with_components(project, tmp_path_factory.mktemp("k8s") / "k8s")))


def class_defaults(path: Path, name: str) -> dict[str, Any]:
    """The literal defaults of class `name`'s fields (`x: int = 1`, `x: int = Field(default=1)`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    body = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == name)
    defaults = {}
    for node in body.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        value = node.value
        if isinstance(value, ast.Call):
            value = next((k.value for k in value.keywords if k.arg == "default"), None)
        if isinstance(value, ast.Constant):
            defaults[node.target.id] = value.value
    return defaults


@pytest.fixture(scope="module")
def settings(project: Path) -> dict[str, Any]:
    """The defaults of the bake's Settings, read from its settings.py."""
    return class_defaults(project / "src" / project.name / "settings.py", "Settings")


def serve_port(project: Path) -> int:
    """`serve`'s default --port, read from core/serve.py."""
    tree = ast.parse((project / "src" / project.name / "core" / "serve.py").read_text())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_argument"
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value == "--port"
        ):
            return next(k.value.value for k in node.keywords if k.arg == "default")  # type: ignore[attr-defined]
    raise AssertionError("no --port in serve.py")


def get_routes(project: Path) -> set[str]:
    """The paths of routes.py's `@router.get(...)` routes."""
    tree = ast.parse((project / "src" / project.name / "routes.py").read_text())
    return {
        decorator.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.AsyncFunctionDef)
        for decorator in node.decorator_list
        if isinstance(decorator, ast.Call)
        and isinstance(decorator.func, ast.Attribute)
        and decorator.func.attr == "get"
        and isinstance(decorator.args[0], ast.Constant)
    }


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in container.get("env", [])}


def port_number(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port, named or numbered, as the container's number."""
    named = {item["name"]: item["containerPort"] for item in container["ports"]}
    return named[port] if isinstance(port, str) else port


def restricted_problems(spec: dict[str, Any]) -> list[str]:
    """What keeps a pod spec from the restricted Pod Security Standard, and from this project's
    own rules on top (read-only root, resources, no token)."""
    problems = []
    pod = spec.get("securityContext", {})
    if pod.get("runAsNonRoot") is not True:
        problems.append("runAsNonRoot")
    if pod.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append("seccompProfile")
    for container in spec["containers"]:
        security = container.get("securityContext", {})
        name = container["name"]
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation")
        if security.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{name}: capabilities")
        if security.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem")
        if security.get("privileged", False) or security.get("runAsUser", 1) == 0:
            problems.append(f"{name}: privileged or root")
    if spec.get("automountServiceAccountToken") is not False:
        problems.append("automountServiceAccountToken")
    return problems


def schema_problems(items: list[dict[str, Any]]) -> list[str]:
    """Each object against the schemas kubernetes-validate ships for its latest release, strict
    (an unknown field is an error, as the API server's strict field validation makes it)."""
    problems = []
    for item in items:
        try:
            kubernetes_validate.validate(item, kubernetes_validate.latest_version(), strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{item['kind']}/{item['metadata']['name']}: {error.message}")
    return problems


@given(st.from_regex(r"[a-z_][a-z0-9_]{0,99}", fullmatch=True))
def test_any_slug_gives_a_kubernetes_name(slug: str) -> None:
    """Whatever the slug, its Kubernetes name is a DNS label (as a Service's must be) of at most
    30 characters, so `<name>-migrate-<tag of 24>` stays within a label value's 63."""
    name = kubernetes_name(slug)
    assert DNS_LABEL.fullmatch(name)
    assert len(name) <= 30


@pytest.mark.parametrize(
    ("slug", "name"),
    [
        ("tutorial_service", "tutorial-service"),
        ("_2048", "project-2048"),
        ("a__b_", "a-b"),
        ("x" * 40, "x" * 30),
        ("a" * 29 + "_b", "a" * 29),
    ],
)
def test_kubernetes_name_examples(slug: str, name: str) -> None:
    assert kubernetes_name(slug) == name


def test_kubectl_apply_k_applies_valid_objects(objects: dict[str, dict[str, Any]]) -> None:
    """The kustomization renders the service's objects, each valid by the schemas of the
    latest Kubernetes release kubernetes-validate ships (1.37 or later), all in one namespace."""
    assert set(objects) == KINDS
    assert schema_problems(list(objects.values())) == []
    assert version_tuple(kubernetes_validate.latest_version()) >= (1, 37)
    assert {item["metadata"]["namespace"] for item in objects.values()} == {"tutorial-service"}


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:2])


def test_the_components_add_a_valid_autoscaler_and_a_service_monitor(
    extended: dict[str, dict[str, Any]],
) -> None:
    """With both components, the HPA is valid and owns the replica count (the Deployment has
    none); the ServiceMonitor (a CRD's: no schema ships) scrapes the Service's metrics port."""
    assert set(extended) == KINDS | COMPONENT_KINDS
    monitor = extended.pop("ServiceMonitor")
    assert schema_problems(list(extended.values())) == []
    assert "replicas" not in extended["Deployment"]["spec"]
    target = extended["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "tutorial-service")
    service = extended["Service"]
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def checkov(*manifests: Path) -> dict[str, Any]:
    """checkov's Kubernetes checks on rendered manifests, offline; its JSON report."""
    arguments = [item for path in manifests for item in ("--file", str(path))]
    result = subprocess.run(
        [CHECKOV, "--framework", "kubernetes", "--skip-download", "--output", "json", *arguments],
        capture_output=True,
        text=True,
        check=False,
        cwd=manifests[0].parent,
    )
    assert result.stdout, result.stderr
    return json.loads(result.stdout)


def test_checkov_leaves_no_finding_unexplained(
    objects: dict[str, dict[str, Any]], extended: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """checkov runs its Kubernetes checks on both renders: none fails, and the only skipped
    ones are the explained few, each with its reason in the object's annotations."""
    manifests = []
    for name, rendered in (("default", objects), ("components", extended)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(rendered.values()), encoding="utf-8")
        manifests.append(path)
    report = checkov(*manifests)
    results = report["results"]
    failed = [f"{c['check_id']} {c['resource']}" for c in results["failed_checks"]]
    assert failed == []
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 100  # the checks ran
    skipped = {
        c["check_id"]: c["check_result"]["suppress_comment"] for c in results["skipped_checks"]
    }
    assert set(skipped) == EXPLAINED
    assert all(len(reason) > 40 for reason in skipped.values())


def test_probes_and_ports_are_the_apps(
    project: Path, objects: dict[str, dict[str, Any]], settings: dict[str, Any]
) -> None:
    """Startup and liveness probe /health, readiness /ready, routes the app has, on serve's
    port; the metrics port is METRICS_PORT's default, annotated for scraping, in the Service
    and the NetworkPolicy, which admits nothing else."""
    container = pod_spec(objects["Deployment"])["containers"][0]
    assert {"/health", "/ready"} <= get_routes(project)
    probes = {
        kind: (
            container[kind]["httpGet"]["path"],
            port_number(container, container[kind]["httpGet"]["port"]),
        )
        for kind in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    app_port = serve_port(project)
    assert probes == {
        "startupProbe": ("/health", app_port),
        "readinessProbe": ("/ready", app_port),
        "livenessProbe": ("/health", app_port),
    }
    metrics_port = settings["metrics_port"]
    annotations = objects["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(metrics_port)
    assert annotations["prometheus.io/path"] == "/metrics"
    service_ports = {
        port_number(container, p["targetPort"]) for p in objects["Service"]["spec"]["ports"]
    }
    assert service_ports == {app_port, metrics_port}
    rules = objects["NetworkPolicy"]["spec"]["ingress"]
    assert [[port["port"] for port in rule["ports"]] for rule in rules] == [
        [app_port],
        [metrics_port],
    ]
    assert "from" not in rules[0]  # the service's clients: anyone the cluster routes here
    assert objects["NetworkPolicy"]["spec"]["policyTypes"] == ["Ingress"]
    selected = objects["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"].items()
    for workload in (objects["Deployment"], objects["Job"]):
        assert selected <= workload["spec"]["template"]["metadata"]["labels"].items()


def test_the_drain_fits_the_probes_and_the_grace_period(
    objects: dict[str, dict[str, Any]], settings: dict[str, Any]
) -> None:
    """terminationGracePeriodSeconds outlasts drain + grace; readiness notices the drain within
    half of it and waits longer than /ready does; a new pod counts as available only after a
    drain + grace, so at most one old pod drains at a time; a rollout adds before it removes."""
    drain, grace = settings["shutdown_drain_seconds"], settings["shutdown_grace_seconds"]
    deployment = objects["Deployment"]
    spec = pod_spec(deployment)
    assert spec["terminationGracePeriodSeconds"] > drain + grace
    readiness = spec["containers"][0]["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= drain / 2
    assert readiness["timeoutSeconds"] > settings["ready_timeout"]
    assert deployment["spec"]["minReadySeconds"] >= drain + grace
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert objects["PodDisruptionBudget"]["spec"]["selector"] == deployment["spec"]["selector"]


def documented_budget(project: Path) -> tuple[int, int]:
    """The budget and process count docs/operations.md's Kubernetes section gives."""
    text = (project / "docs" / "operations.md").read_text(encoding="utf-8")
    section = text[text.index("## Kubernetes") :]
    found = re.search(r"DATABASE_CONNECTION_BUDGET=(\d+) WEB_CONCURRENCY=(\d+)", section)
    assert found, "the Kubernetes section gives the budget"
    return int(found[1]), int(found[2])


def test_the_pools_fit_the_documented_budget(
    project: Path,
    objects: dict[str, dict[str, Any]],
    extended: dict[str, dict[str, Any]],
) -> None:
    """Each pod's pool is the budget over WEB_CONCURRENCY, which counts every pod that may hold
    connections: the replicas (or the HPA's maximum), the rollout's extra pod and a draining
    one. The HPA's maximum times the pool stays within the budget the docs give, and the
    budget leaves a default server room for the migration."""
    variables = env(pod_spec(objects["Deployment"])["containers"][0])
    budget = int(variables["DATABASE_CONNECTION_BUDGET"]["value"])
    processes = int(variables["WEB_CONCURRENCY"]["value"])
    assert (budget, processes) == documented_budget(project)
    pool = budget // processes
    assert pool >= 2  # core/budget.py's MIN_POOL
    surge = objects["Deployment"]["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    maximum = extended["HorizontalPodAutoscaler"]["spec"]["maxReplicas"]
    assert objects["Deployment"]["spec"]["replicas"] + surge + 1 <= processes
    assert maximum + surge + 1 <= processes
    assert maximum * pool <= budget
    assert processes * pool <= budget <= SERVER_CONNECTIONS - MIGRATION_CONNECTIONS
    assert extended["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2  # the PDB lets one go


def test_only_the_job_gets_the_migration_url(
    project: Path, objects: dict[str, dict[str, Any]]
) -> None:
    """The URLs are files of the Secret that secret.example.yaml shows (which `apply -k` never
    applies), mounted read-only and named by <NAME>_FILE: the app's pods get the app's URL
    only, the Job both (it grants the app's role its rows); no URL and no secret is in the
    environment, and the Job runs the migration command."""
    example = load_yaml(project / "deploy" / "kubernetes" / "secret.example.yaml")
    assert "Secret" not in objects
    files: dict[str, dict[str, str]] = {}
    for kind in ("Deployment", "Job"):
        spec = pod_spec(objects[kind])
        [container] = spec["containers"]
        assert "envFrom" not in container
        for variable in container.get("env", []):
            assert "valueFrom" not in variable
            assert "://" not in variable.get("value", "")
        [volume] = [v for v in spec["volumes"] if "secret" in v]
        assert volume["secret"]["secretName"] == example["metadata"]["name"]
        [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
        assert mount["readOnly"] is True
        keys = [item["key"] for item in volume["secret"].get("items", [])] or list(
            example["stringData"]
        )
        files[container["name"]] = {
            name: variable["value"].removeprefix(mount["mountPath"] + "/")
            for name, variable in env(container).items()
            if name.endswith("_FILE")
        }
        assert set(files[container["name"]].values()) <= set(keys)
    assert files == {
        "app": {"DATABASE_URL_FILE": "database-url"},
        "migrate": {
            "DATABASE_MIGRATION_URL_FILE": "migration-url",
            "DATABASE_URL_FILE": "database-url",
        },
    }
    assert set(example["stringData"]) == {"database-url", "migration-url"}
    assert example["metadata"]["namespace"] == objects["Deployment"]["metadata"]["namespace"]
    job = pod_spec(objects["Job"])["containers"]
    assert job[0]["command"] == ["python", "-m", f"{project.name}.core.migrations", "upgrade"]
    assert "deploy/kubernetes/secret.yaml" in (project / ".gitignore").read_text().splitlines()


def test_the_migration_job_is_one_per_release(objects: dict[str, dict[str, Any]]) -> None:
    """The Job runs the Deployment's image, is named after its tag, gives up soon and is
    cleaned up; `-l app.kubernetes.io/component=migration` selects it alone."""
    job, deployment = objects["Job"], objects["Deployment"]
    image = pod_spec(deployment)["containers"][0]["image"]
    assert pod_spec(job)["containers"][0]["image"] == image == "tutorial-service:0.1.0"
    assert job["metadata"]["name"] == "tutorial-service-migrate-0.1.0"
    assert job["spec"]["backoffLimit"] <= 2
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    assert pod_spec(job)["restartPolicy"] == "Never"
    migration = [
        kind
        for kind, item in objects.items()
        if item["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "migration"
    ]
    assert migration == ["Job"]


# The lines a user (and the baked CI's kind job, with sed) edits in kustomization.yaml.
USERS_LINES = {
    "namespace": r"^namespace: .*$",
    "newName": r"^( *newName:).*$",
    "newTag": r"^( *newTag:).*$",
    "count": r"^( *count:).*$",
}


def test_namespace_image_and_replicas_are_all_a_user_sets(project: Path, tmp_path: Path) -> None:
    """kustomization.yaml holds the namespace, one image and one replica count; set on their
    lines, every object follows: each in the namespace, each container on the image, the Job
    named after the new tag, the Deployment at the count; no other object names a default."""
    source = project / "deploy" / "kubernetes"
    kustomization = load_yaml(source / "kustomization.yaml")
    assert set(kustomization) == {
        *("apiVersion", "kind", "namespace", "resources", "images", "replicas", "replacements")
    }
    target = tmp_path / "k8s"
    shutil.copytree(source, target)
    text = (target / "kustomization.yaml").read_text(encoding="utf-8")
    values = {
        "namespace": "namespace: shop",
        "newName": r"\1 registry.example.com/team/shop",
        "newTag": r'\1 "2.0.1"',
        "count": r"\1 3",
    }
    for key, pattern in USERS_LINES.items():
        text, count = re.subn(pattern, values[key], text, flags=re.MULTILINE)
        assert count == 1, key
    (target / "kustomization.yaml").write_text(text, encoding="utf-8")
    objects = by_kind(render(target))
    assert {item["metadata"]["namespace"] for item in objects.values()} == {"shop"}
    for kind in ("Deployment", "Job"):
        images = {c["image"] for c in pod_spec(objects[kind])["containers"]}
        assert images == {"registry.example.com/team/shop:2.0.1"}
    assert objects["Job"]["metadata"]["name"] == "tutorial-service-migrate-2.0.1"
    assert objects["Deployment"]["spec"]["replicas"] == 3
    assert "0.1.0" not in yaml.safe_dump_all(objects.values())


@pytest.mark.parametrize("slug", ["schema_migrate_tool", "a" * 40, "x1"])
def test_the_job_is_named_after_the_tag_for_any_project(cookies_session: Any, slug: str) -> None:
    """The replacement that names the Job counts the parts of any project's name (one with
    `-migrate-` in it, one cut to 30 characters): `<name>-migrate-<tag>`, at most 63."""
    result = cookies_session.bake(extra_context={"web_framework": "fastapi", "project_slug": slug})
    objects = by_kind(render(Path(result.project_path) / "deploy" / "kubernetes"))
    name = f"{kubernetes_name(slug)}-migrate-0.1.0"
    assert objects["Job"]["metadata"]["name"] == name
    assert len(f"{kubernetes_name(slug)}-migrate-{'x' * 24}") <= 63
    assert all(
        DNS_LABEL.fullmatch(item["metadata"]["name"])
        for kind, item in objects.items()
        if kind != "Job"
    )


def test_every_pod_is_restricted_and_bounded(
    project: Path, objects: dict[str, dict[str, Any]]
) -> None:
    """Both pod templates meet the restricted Pod Security Standard as the image's own user,
    on a read-only root (the app with an emptyDir /tmp), without service links, each container
    with requests and limits of CPU and memory."""
    user = re.search(r"^USER (\d+):(\d+)$", (project / "Dockerfile").read_text(), re.MULTILINE)
    assert user
    for kind in ("Deployment", "Job"):
        spec = pod_spec(objects[kind])
        assert restricted_problems(spec) == [], kind
        assert (spec["securityContext"]["runAsUser"], spec["securityContext"]["runAsGroup"]) == (
            int(user[1]),
            int(user[2]),
        )
        assert spec["enableServiceLinks"] is False, kind
        for container in spec["containers"]:
            resources = container["resources"]
            assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    app = pod_spec(objects["Deployment"])
    # Writable: /tmp only; the Secret's files are read-only.
    mounts = app["containers"][0]["volumeMounts"]
    assert [m["mountPath"] for m in mounts if not m.get("readOnly")] == ["/tmp"]
    assert app["volumes"][0]["emptyDir"]["sizeLimit"]
    assert objects["ServiceAccount"]["automountServiceAccountToken"] is False


def production_commands(project: Path) -> list[str]:
    """The command lines of the README's Production block that runs kubectl."""
    text = (project / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Production") : text.index("## Test")]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    block = next(block for block in blocks if "kubectl" in block)
    return [line.split("  #")[0].strip() for line in block.splitlines() if not line.startswith("#")]


def test_the_readme_gives_the_order_of_a_release(
    project: Path, objects: dict[str, dict[str, Any]]
) -> None:
    """The baked README's Production section: the namespace (restricted) and the Secret once,
    then the migration Job, waited for as long as it may run, then the rest, then the rollout;
    with the names the manifests have; and a word on Argo CD and Flux."""
    namespace = objects["Deployment"]["metadata"]["namespace"]
    deployment = objects["Deployment"]["metadata"]["name"]
    deadline = objects["Job"]["spec"]["activeDeadlineSeconds"]
    assert production_commands(project) == [
        f"kubectl create namespace {namespace}",
        f"kubectl label namespace {namespace} pod-security.kubernetes.io/enforce=restricted",
        "kubectl apply -f deploy/kubernetes/secret.yaml",
        "job=$(kubectl apply -k deploy/kubernetes -l app.kubernetes.io/component=migration"
        " -o name)",
        f'kubectl -n {namespace} wait --for=condition=complete --timeout={deadline // 60}m "$job"',
        "kubectl apply -k deploy/kubernetes",
        f"kubectl -n {namespace} rollout status deployment/{deployment} --timeout=10m",
    ]
    readme = " ".join((project / "README.md").read_text(encoding="utf-8").split())
    for words in ("maxUnavailable: 0", "argocd.argoproj.io/sync-wave", "dependsOn"):
        assert words in readme


def test_a_bake_without_the_web_service_has_no_kubernetes(cookies_session: Any) -> None:
    """The `none` bake: no deploy/, and no word of Kubernetes manifests in its README."""
    project = Path(cookies_session.bake(extra_context={"web_framework": "none"}).project_path)
    assert not (project / "deploy").exists()
    assert "kubectl" not in (project / "README.md").read_text(encoding="utf-8")
    assert "deploy/kubernetes" not in (project / ".gitignore").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def kind_job(project: Path) -> dict[str, Any]:
    """The baked workflow's `kubernetes` job."""
    return load_yaml(project / ".github" / "workflows" / "ci.yml")["jobs"]["kubernetes"]


# Stand-ins for the kind job's cluster tools: each call is logged (stdin too, for `-f -`), and
# `apply -o name` answers with names of the kinds kubectl would print.
KUBECTL_STUB = """#!/bin/bash
echo "$*" >> "$STUB_LOG"
case " $* " in *" -f - "*) cat > "$STUB_LOG.$(wc -l < "$STUB_LOG")" ;; esac
case " $* " in
  *" apply -k "*" -l "*" -o name "*) echo job.batch/stub-migrate ;;
  *" apply -k "*" -o name "*) printf 'service/stub\\ndeployment.apps/stub\\n' ;;
  *" get pod "*" -o name "*) echo pod/load-stub ;;
esac
"""
PASSING_STUB = '#!/bin/bash\necho "$(basename "$0") $*" >> "$STUB_LOG"\n'


def run_kind_job(project: Path, job: dict[str, Any], workspace: Path) -> tuple[list[str], Path]:
    """The kind job's cluster and release steps, run by bash as the runner runs them, in a copy
    of the bake, with kind, kubectl and sleep stood in for; their calls and the log's path."""
    shutil.copytree(project, workspace)
    stubs = workspace.parent / "stubs"
    stubs.mkdir()
    for name, script in (
        ("kubectl", KUBECTL_STUB),
        ("kind", PASSING_STUB),
        ("sleep", PASSING_STUB),
    ):
        (stubs / name).write_text(script)
        (stubs / name).chmod(0o755)
    log = workspace.parent / "calls"
    log.touch()
    environment = {
        "PATH": f"{stubs}:/usr/bin:/bin",
        "STUB_LOG": str(log),
        **{key: str(value) for key, value in job["env"].items()},
    }
    for step in job["steps"]:
        if "cluster" in step.get("name", "") or "release" in step.get("name", ""):
            subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                cwd=workspace,
                env=environment,
                check=True,
            )
    return log.read_text().splitlines(), log


def test_the_kind_job_releases_as_the_readme_says(
    project: Path, kind_job: dict[str, Any], tmp_path: Path
) -> None:
    """Run with stand-ins for kind and kubectl, the job: starts the cluster with the images and
    a database; makes the namespace restricted; fills in secret.example.yaml; releases the
    first tag as the README does (the migration Job, waited for, then the rest, then the
    rollout); starts a load client, releases the second tag the same way, then stops the
    client and requires it to have completed. What it applies is valid, the load client as
    restricted as the app; kustomization.yaml ends on the second tag."""
    calls, log = run_kind_job(project, kind_job, tmp_path / "project")
    namespace = load_yaml(project / "deploy" / "kubernetes" / "kustomization.yaml")["namespace"]
    release = [
        "apply -k deploy/kubernetes -l app.kubernetes.io/component=migration -o name",
        f"-n {namespace} wait --for=condition=complete --timeout=5m job.batch/stub-migrate",
        "apply -k deploy/kubernetes -o name",
        f"-n {namespace} rollout status deployment.apps/stub --timeout=5m",
    ]
    assert calls == [
        "kind create cluster --image " + kind_job["env"]["KIND_NODE_IMAGE"] + " --wait 120s",
        "kind load docker-image app:ci-1 app:ci-2",
        "create namespace ci-database",
        "-n ci-database apply -f -",
        "-n ci-database wait --for=condition=Ready pod/postgres --timeout=180s",
        f"create namespace {namespace}",
        f"label namespace {namespace} pod-security.kubernetes.io/enforce=restricted",
        "apply -f deploy/kubernetes/secret.yaml",
        *release,
        "apply -k deploy/kubernetes -o name",
        f"-n {namespace} apply -f -",
        f"-n {namespace} wait --for=condition=Ready pod -l job-name=load --timeout=2m",
        "sleep 10",
        *release,
        "sleep 10",
        f"-n {namespace} get pod -l job-name=load -o name",
        f"-n {namespace} exec pod/load-stub -- python -c"
        " import os, signal; os.kill(1, signal.SIGTERM)",
        f"-n {namespace} wait --for=condition=complete --timeout=60s job/load",
        f"-n {namespace} logs job/load",
    ]
    applied = sorted(log.parent.glob("calls.*"), key=lambda path: int(path.suffix[1:]))
    database, load = (list(yaml.safe_load_all(path.read_text())) for path in applied)
    assert [item["kind"] for item in database + load] == ["Pod", "Service", "Job"]
    assert schema_problems(database + load) == []
    assert restricted_problems(pod_spec(load[0])) == []
    container = pod_spec(load[0])["containers"][0]
    assert container["env"] == [{"name": "URL", "value": "http://stub"}]
    client = container["args"][0]
    compile(client, "load", "exec")
    assert "raise SystemExit(1 if failed or not ok or not stop else 0)" in client
    deploy = tmp_path / "project" / "deploy" / "kubernetes"
    secret = load_yaml(deploy / "secret.yaml")
    assert schema_problems([secret]) == []
    url = kind_job["env"]["CI_DATABASE_URL"]
    assert secret["stringData"] == {"database-url": url, "migration-url": url}
    objects = by_kind(render(deploy))
    assert pod_spec(objects["Deployment"])["containers"][0]["image"] == "app:ci-2"
    assert objects["Job"]["metadata"]["name"].endswith("-migrate-ci-2")


def test_the_kind_job_pins_kind_its_node_image_and_kubectl(kind_job: dict[str, Any]) -> None:
    """kind's binary is checked against its sha256, its node image named by digest, kubectl
    the template's own version; every step but the checkout is skipped by a project without
    deploy/kubernetes; every script parses in bash."""
    assert kind_job["timeout-minutes"] <= 30
    assert re.fullmatch(r"v\d+\.\d+\.\d+", kind_job["env"]["KIND_VERSION"])
    assert re.fullmatch(r"[0-9a-f]{64}", kind_job["env"]["KIND_SHA256"])
    assert re.fullmatch(
        r"kindest/node:v\d+\.\d+\.\d+@sha256:[0-9a-f]{64}", kind_job["env"]["KIND_NODE_IMAGE"]
    )
    dev = tomllib.loads((TEMPLATE / "pyproject.toml").read_text())["dependency-groups"]["dev"]
    assert kind_job["env"]["KUBECTL"] in dev
    skip = "hashFiles('deploy/kubernetes/kustomization.yaml') != ''"
    assert all(skip in step["if"] for step in kind_job["steps"][1:])
    for step in kind_job["steps"]:
        check = subprocess.run(["bash", "-n", "-c", step.get("run", "")], capture_output=True)
        assert check.returncode == 0, check.stderr
    install = next(step["run"] for step in kind_job["steps"] if "pinned" in step.get("name", ""))
    assert '"https://github.com/kubernetes-sigs/kind/releases/download/$KIND_VERSION/' in install
    assert 'echo "$KIND_SHA256  $RUNNER_TEMP/bin/kind" | sha256sum --check' in install
    assert install.index("sha256sum --check") < install.index('chmod +x "$RUNNER_TEMP/bin/kind"')
