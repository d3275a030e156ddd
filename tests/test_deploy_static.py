"""Static checks of the deployment files (Dockerfiles, compose, Helm chart, dashboard), as CI can run them.

No Docker engine or cluster exists here, so the files are validated by the tools that can judge them offline
(scripts/check_deploy.sh: hadolint, docker-compose config, helm lint/template + kubernetes-validate), and against
the code they deploy: every environment variable they set must be a setting the service reads, every port must
be the service's default, and every metric the dashboard queries must be one the code produces.
A missing tool fails these tests (make setup installs them all); only docker-compose may be absent, where apt is.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check_deploy.sh"
CHART = ROOT / "deploy" / "helm" / "lorag"
DASHBOARD = ROOT / "deploy" / "grafana" / "lorag-dashboard.json"
SERVICES = ["gateway", "embedding", "indexer", "retrieval", "generation", "training"]
TOOLS_PATH = os.pathsep.join(
    [str(ROOT / ".venv" / "bin"), str(Path(os.environ.get("LORAG_CACHE", Path.home() / ".cache" / "lorag")) / "bin")]
)
# Read by every service (or by lorag_models / the chassis) rather than through one service's settings class.
STACK_WIDE = {"LORAG_METRICS_HOST", "LORAG_MODEL_CACHE"} | {
    f"LORAG_WEAVIATE_{k}" for k in ("HOST", "GRPC_HOST", "HTTP_PORT", "GRPC_PORT", "SECURE", "API_KEY")
}
# Metrics in the dashboard that come from outside lorag (NVIDIA dcgm-exporter for GPU use).
EXTERNAL_METRICS = {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED"}


def run_check(section: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": TOOLS_PATH + os.pathsep + os.environ.get("PATH", "")}
    return subprocess.run(
        [str(SCRIPT), section], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False
    )


def tool(name: str) -> str:
    found = shutil.which(name, path=TOOLS_PATH + os.pathsep + os.environ.get("PATH", ""))
    assert found, f"{name} is not installed: run make setup"
    return found


# --- the tools' verdicts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("section", ["pins", "dockerfiles", "helm", "dashboard"])
def test_check_deploy_section_passes(section):
    result = run_check(section)
    assert result.returncode == 0, f"check_deploy.sh {section} failed:\n{result.stdout}\n{result.stderr}"
    assert f"{section}: ok" in result.stdout


def test_compose_files_validate():
    if shutil.which("docker-compose") is None:
        apt_usable = shutil.which("apt-get") is not None and os.geteuid() == 0
        if not apt_usable:
            pytest.skip("docker-compose is not installed and apt cannot install it here (not root or no apt-get)")
    result = run_check("compose")
    assert result.returncode == 0, f"check_deploy.sh compose failed:\n{result.stdout}\n{result.stderr}"


# --- the deploy files agree with the code -----------------------------------------------------------------------


def settings_env_names(service: str) -> set[str]:
    """Every environment variable the service's settings class reads."""
    from lorag_core.config import env_name

    module = __import__(f"lorag_{service}.config", fromlist=["*"])
    cls = getattr(module, f"{service.capitalize()}Settings")
    return {env_name(cls, field) for field in cls.model_fields}


def compose_environments() -> dict[str, dict[str, str]]:
    """Each lorag service's environment in docker-compose.yml (YAML anchors and merge keys resolved)."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return {svc: {k: str(v) for k, v in compose["services"][svc]["environment"].items()} for svc in SERVICES}


def dockerfile_env(service: str) -> dict[str, str]:
    text = (ROOT / "services" / service / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(dict(re.findall(r"([A-Z_][A-Z0-9_]*)=(\S+)", line)))
    return env


def helm_environments(*args: str) -> dict[str, dict[str, str]]:
    """Each lorag container's environment in the rendered chart (its own env plus the common ConfigMap)."""
    rendered = subprocess.run(
        [tool("helm"), "template", "lorag", str(CHART), *args], capture_output=True, text=True, check=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    envs = {}
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        container = doc["spec"]["template"]["spec"]["containers"][0]
        env = {}
        for source in container.get("envFrom", []):
            env.update(configmaps[source["configMapRef"]["name"]])
        env.update({e["name"]: e.get("value", "<from secret or field>") for e in container.get("env", [])})
        envs[container["name"]] = env
    return envs


def unknown_settings(service: str, env: dict[str, str]) -> list[str]:
    """LORAG_* names in ``env`` that nothing reads: a typo or a setting that was renamed."""
    own = settings_env_names(service)
    peers = {f"LORAG_{s.upper()}_{k}" for s in SERVICES for k in ("ADDRESS", "HOST", "PORT")}
    prefix = f"LORAG_{service.upper()}_"
    return sorted(
        name
        for name in env
        if (name.startswith("LORAG_") and name not in own | STACK_WIDE | peers)
        or (name.startswith(prefix) and name not in own and not name.endswith("_ADDRESS"))
    )


@pytest.fixture(scope="module")
def helm_envs():
    default = helm_environments()
    gpu = helm_environments("-f", str(CHART / "ci" / "gpu-values.yaml"))
    return default, gpu


@pytest.mark.parametrize("service", SERVICES)
def test_every_setting_the_deploy_files_set_is_read_by_the_service(service, helm_envs):
    sources = {
        "docker-compose.yml": compose_environments()[service],
        f"services/{service}/Dockerfile": dockerfile_env(service),
        "helm (default values)": helm_envs[0][service],
        "helm (gpu values)": helm_envs[1][service],
    }
    problems = {where: unknown_settings(service, env) for where, env in sources.items()}
    assert not any(problems.values()), f"settings no lorag_{service} field reads: {problems}"


@pytest.mark.parametrize("service", SERVICES)
def test_ports_match_the_services_defaults(service, helm_envs):
    from lorag_client.endpoints import DEFAULT_PORTS, default_metrics_port

    port, metrics = str(DEFAULT_PORTS[service]), str(default_metrics_port(service))
    up = service.upper()
    for where, env in {
        "docker-compose.yml": compose_environments()[service],
        "Dockerfile": dockerfile_env(service),
        "helm": helm_envs[0][service],
    }.items():
        assert (env.get(f"LORAG_{up}_PORT"), env.get(f"LORAG_{up}_METRICS_PORT")) == (port, metrics), where
        assert env.get(f"LORAG_{up}_HOST") == "0.0.0.0", f"{where}: a container must bind all interfaces"
    dockerfile = (ROOT / "services" / service / "Dockerfile").read_text()
    assert f"EXPOSE {port} {metrics}" in dockerfile
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = {t for job in prometheus["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert f"{service}:{metrics}" in targets


# --- the dashboard queries metrics that exist -------------------------------------------------------------------

_INSTRUMENTS = {
    "create_counter", "create_up_down_counter", "create_histogram", "create_gauge",
    "create_observable_counter", "create_observable_up_down_counter", "create_observable_gauge",
}  # fmt: skip


def exposition_names() -> set[str]:
    """Prometheus names of every instrument lorag's code creates, as the real OTel Prometheus exporter writes them.

    The instruments are found in the source (each create_* call with a literal name and unit), recreated with the
    same kind and unit on a meter whose reader is opentelemetry-exporter-prometheus, recorded once, and scraped.
    """
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.metrics import Observation
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import REGISTRY, generate_latest

    found: dict[str, tuple[str, str]] = {}
    for path in [*ROOT.glob("libs/*/src/**/*.py"), *ROOT.glob("services/*/src/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in _INSTRUMENTS
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                units = [k.value.value for k in node.keywords if k.arg == "unit" and isinstance(k.value, ast.Constant)]
                found[str(node.args[0].value)] = (node.func.attr, str(units[0]) if units else "")
    meter = MeterProvider(metric_readers=[PrometheusMetricReader(disable_target_info=True)]).get_meter("scan")
    for name, (kind, unit) in found.items():
        if kind.startswith("create_observable"):
            getattr(meter, kind)(name, callbacks=[lambda _options: [Observation(1)]], unit=unit)
        else:
            instrument = getattr(meter, kind)(name, unit=unit)
            record = {"create_histogram": "record", "create_gauge": "set"}.get(kind, "add")
            getattr(instrument, record)(1)
    text = generate_latest(REGISTRY).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_metric_the_dashboard_queries_is_produced_by_the_code():
    # A separate interpreter: the exporter registers with prometheus_client's global registry.
    scan = subprocess.run([sys.executable, __file__, "--exposition"], capture_output=True, text=True, check=True)
    produced = set(scan.stdout.split())
    assert "lorag_rpc_server_requests_total" in produced and "lorag_rpc_server_duration_seconds_bucket" in produced
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v.get("definition")]
    queried = {m for e in exprs for m in re.findall(r"\b(lorag_[a-z0-9_]+|DCGM_[A-Z0-9_]+)\b", e)}
    missing = sorted(queried - produced - EXTERNAL_METRICS)
    assert not missing, f"the dashboard queries metrics no lorag code produces: {missing}"
    # RED for every service and the domain panels the dashboard promises.
    for metric in ("lorag_rpc_server_requests_total", "lorag_rpc_server_duration_seconds_bucket",
                   "lorag_embedding_batch_size_bucket", "lorag_embedding_queue_depth", "lorag_generation_tokens_total",
                   "lorag_generation_adapters_active", "lorag_generation_queue_depth", "lorag_training_jobs_running",
                   "lorag_training_jobs_finished_total"):  # fmt: skip
        assert metric in queried, f"the dashboard has no panel on {metric}"


if __name__ == "__main__" and sys.argv[1:] == ["--exposition"]:
    print("\n".join(sorted(exposition_names())))
