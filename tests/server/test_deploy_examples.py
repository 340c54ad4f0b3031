"""The deployment examples shipped in `server/deploy/` stay true: every option they set is one `rumor serve` takes,
with values its configuration accepts, and the Kubernetes objects fit together (the seed name is the headless
Service's, which publishes pods before they are ready). What they cannot check here, a real systemd or Kubernetes,
the README says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from rumor import server
from rumor.server.cli import build_parser
from rumor.server.config import load_config

DEPLOY = Path(server.__file__).parent / "deploy"
#: what the cluster fills in for the $(VARS) of the pod spec
POD = {"POD_NAME": "rumor-1", "POD_IP": "10.244.1.7", "POD_NAMESPACE": "default"}


def test_the_systemd_unit_starts_a_node_whose_environment_is_a_valid_config() -> None:
    unit = (DEPLOY / "rumor.service").read_text()
    assert re.search(r"^ExecStart=\S+/rumor serve$", unit, re.MULTILINE)
    env = dict(line.removeprefix("Environment=").split("=", 1) for line in unit.splitlines()
               if line.startswith("Environment="))
    sample = dict(re.match(r"#\s+(RUMOR_\w+)=(\S+)", line).groups()  # type: ignore[union-attr]
                  for line in unit.splitlines() if re.match(r"#\s+RUMOR_\w+=", line))
    config = load_config({}, env | sample)
    assert config.http_addr == "0.0.0.0:7000" and config.gossip_addr == "0.0.0.0:7946"
    assert config.advertise_addr == "10.0.0.11" and config.seeds == ("rumor.internal.example:7946",)
    assert config.tls_ca is not None and str(config.data_dir) == "/var/lib/rumor"


def manifests() -> dict[str, dict[str, Any]]:
    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()))
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in documents}


def test_the_statefulset_runs_a_node_with_valid_options() -> None:
    objects = manifests()
    pod = objects["StatefulSet/rumor"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["rumor", "serve"]
    args = [re.sub(r"\$\((\w+)\)", lambda m: POD[m.group(1)], arg) for arg in container["args"]]
    parsed = build_parser().parse_args(["serve", *args])
    config = load_config({name: value for name, value in vars(parsed).items() if name not in ("command", "config")})
    assert config.advertise_addr == POD["POD_IP"] and config.node_id == POD["POD_NAME"]
    assert config.seeds == ("rumor.default.svc.cluster.local:7946",)
    assert {e["name"] for e in container["env"]} >= {"POD_NAME", "POD_IP", "POD_NAMESPACE", "RUMOR_CLUSTER_KEY"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"


def test_the_seed_name_is_the_headless_service_that_publishes_every_pod() -> None:
    objects = manifests()
    headless = objects["Service/rumor"]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    assert {(p["port"], p["protocol"]) for p in headless["ports"]} >= {(7946, "UDP"), (7946, "TCP")}
    statefulset = objects["StatefulSet/rumor"]["spec"]
    assert statefulset["serviceName"] == "rumor"
    join = next(a for a in statefulset["template"]["spec"]["containers"][0]["args"] if a.startswith("--join="))
    assert join.startswith("--join=rumor.$(POD_NAMESPACE).svc")
    assert objects["PodDisruptionBudget/rumor"]["spec"]["maxUnavailable"] == 1
