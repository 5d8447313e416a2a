"""Checks a rendered overlay (`kubectl kustomize` output) for the rules of infra/k8s beyond what the
Kubernetes schemas say: probes on the admin port, resources, PodDisruptionBudgets and NetworkPolicies
for every workload, default deny with egress beyond the cluster for notifier only, a 3-node NATS
JetStream cluster with `sync_interval: always`, an Ingress path per public service, every
ConfigMap (and key) a container reads present, and the postgres-roles Job (each service's Postgres
role) run as non-root with resources, reaching Postgres (and DNS) only.

With SECRETS.yaml (dev-secrets.sh output) it also checks that every Secret and key the workloads
reference is there, so the dev overlay starts with what dev-secrets.sh creates.

Usage: python check_manifests.py RENDERED.yaml [SECRETS.yaml]
Prints one line per failed rule; exits 1 if any. Needs PyYAML (kubernetes-validate depends on it).
"""

import ipaddress
import re
import sys

import yaml

# The gRPC services each deployment serves publicly (WebhookService stays internal to the mesh).
PUBLIC = {
    "tenancy": "TenancyService",
    "ingest": "DatasetService",
    "analysis": "AnalysisService",
    "trust-scoring": "TrustService",
    "deletion": "DeletionService",
    "audit": "AuditService",
}
SERVICES = set(PUBLIC) | {"notifier"}
ADMIN_PORT = "admin"
# The schemas whose roles the postgres-roles Job provisions (one password each in its Secret).
SCHEMAS = {service.replace("-", "_") for service in SERVICES}
POSTGRES_PORT = 5432
DNS_PORT = 53


def selects(selector, labels):
    """Whether a label selector (matchLabels/matchExpressions) matches `labels`."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def is_public_block(block):
    """Whether an ipBlock reaches addresses outside private, loopback and link-local ranges."""
    net = ipaddress.ip_network(block["cidr"])
    return net.prefixlen == 0 or not (net.is_private or net.is_loopback or net.is_link_local)


def check(docs):
    errors = []
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    config_maps = {cm["metadata"]["name"]: cm.get("data", {}) for cm in by_kind.get("ConfigMap", [])}
    pdbs = by_kind.get("PodDisruptionBudget", [])
    policies = by_kind.get("NetworkPolicy", [])

    if not any(
        p["spec"].get("podSelector") == {} and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress") and not p["spec"].get("egress")
        for p in policies
    ):
        errors.append("no default-deny NetworkPolicy (empty podSelector, Ingress and Egress, no rules)")

    workloads = by_kind.get("Deployment", []) + by_kind.get("StatefulSet", [])
    jobs = by_kind.get("Job", [])
    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    if set(deployments) != SERVICES:
        errors.append(f"Deployments {sorted(deployments)} are not the seven services {sorted(SERVICES)}")

    for workload in workloads + jobs:
        name = f'{workload["kind"]}/{workload["metadata"]["name"]}'
        template = workload["spec"]["template"]
        labels = template["metadata"].get("labels", {})
        pod = template["spec"]
        long_running = workload["kind"] != "Job"
        if not pod.get("securityContext", {}).get("runAsNonRoot"):
            errors.append(f"{name}: pod does not set runAsNonRoot")
        if long_running and not any(selects(p["spec"]["selector"], labels) for p in pdbs):
            errors.append(f"{name}: no PodDisruptionBudget selects its pods")
        if not any(selects(p["spec"]["podSelector"], labels) and p["spec"]["podSelector"] for p in policies):
            errors.append(f"{name}: no NetworkPolicy of its own selects its pods")
        for volume in pod.get("volumes", []):
            if "configMap" in volume and volume["configMap"]["name"] not in config_maps:
                errors.append(f'{name}: volume {volume["name"]} mounts missing ConfigMap {volume["configMap"]["name"]}')
        for container in pod["containers"]:
            cname = f'{name} container {container["name"]}'
            resources = container.get("resources", {})
            for part in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(resources.get(part, {})):
                    errors.append(f"{cname}: {part} must set cpu and memory")
            for probe in ("readinessProbe", "livenessProbe"):
                if long_running and probe not in container:
                    errors.append(f"{cname}: no {probe}")
            if workload["kind"] == "Deployment":
                for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/livez")):
                    get = container.get(probe, {}).get("httpGet", {})
                    if get.get("port") != ADMIN_PORT or get.get("path") != path:
                        errors.append(f"{cname}: {probe} must GET {path} on the {ADMIN_PORT} port")
            security = container.get("securityContext", {})
            if security.get("allowPrivilegeEscalation") is not False or not security.get("readOnlyRootFilesystem"):
                errors.append(f"{cname}: must forbid privilege escalation and mount its root read-only")
            for env in container.get("env", []):
                ref = (env.get("valueFrom") or {}).get("configMapKeyRef")
                if ref and ref["key"] not in config_maps.get(ref["name"], {}):
                    errors.append(f'{cname}: env {env["name"]} reads missing ConfigMap key {ref["name"]}/{ref["key"]}')

    # Egress beyond the cluster: notifier only.
    for policy in policies:
        for rule in policy["spec"].get("egress") or []:
            public = [peer["ipBlock"]["cidr"] for peer in rule.get("to", []) if "ipBlock" in peer
                      and is_public_block(peer["ipBlock"])]
            if not public:
                continue
            selected = [n for n, d in deployments.items()
                        if selects(policy["spec"]["podSelector"], d["spec"]["template"]["metadata"]["labels"])]
            if selected != ["notifier"]:
                errors.append(f'NetworkPolicy/{policy["metadata"]["name"]}: egress to {public} for {selected}; '
                              "only notifier may leave the cluster")

    errors += check_postgres_roles(jobs, policies, config_maps)

    nats = [s for s in by_kind.get("StatefulSet", []) if s["metadata"]["name"] == "nats"]
    if not nats or nats[0]["spec"].get("replicas") != 3:
        errors.append("StatefulSet/nats must run 3 replicas")
    nats_conf = "".join(
        value for name, data in config_maps.items() if name.startswith("nats-config") for value in data.values()
    )
    for needle in ("sync_interval: always", "cluster {", "routes:", "jetstream {"):
        if needle not in nats_conf:
            errors.append(f"the NATS config lacks `{needle}`")

    routed = {}
    for ingress in by_kind.get("Ingress", []):
        for rule in ingress["spec"].get("rules", []):
            for path in rule["http"]["paths"]:
                routed[path["path"]] = path["backend"]["service"]["name"]
        if ingress["metadata"].get("annotations", {}).get(
                "nginx.ingress.kubernetes.io/backend-protocol") not in ("GRPC", "GRPCS"):
            errors.append(f'Ingress/{ingress["metadata"]["name"]}: no gRPC backend-protocol annotation')
    for service, api in PUBLIC.items():
        if routed.get(f"/trustmesh.v1.{api}/") != service:
            errors.append(f"the Ingress does not route /trustmesh.v1.{api}/ to {service}")
    return errors


def check_postgres_roles(jobs, policies, config_maps):
    """The postgres-roles Job: it runs provision-roles.sql for every service's schema, and its pods
    reach Postgres and DNS only."""
    errors = []
    job = next((j for j in jobs if j["metadata"]["name"] == "postgres-roles"), None)
    if job is None:
        return ["no Job/postgres-roles provisioning the services' Postgres roles"]
    pod = job["spec"]["template"]["spec"]
    labels = job["spec"]["template"]["metadata"].get("labels", {})
    scripts = [cm for volume in pod.get("volumes", []) if "configMap" in volume
               for cm in [config_maps.get(volume["configMap"]["name"], {})] if "provision-roles.sql" in cm]
    if not scripts:
        errors.append("Job/postgres-roles mounts no ConfigMap with provision-roles.sql")
    script = " ".join(" ".join(c.get("command", []) + c.get("args", [])) for c in pod["containers"])
    missing = sorted(SCHEMAS - set(re.findall(r"[a-z_]+", script)))
    if missing:
        errors.append(f"Job/postgres-roles does not provision {missing}")
    for policy in policies:
        if not selects(policy["spec"]["podSelector"], labels) or "Egress" not in policy["spec"].get("policyTypes", []):
            continue
        for rule in policy["spec"].get("egress") or []:
            ports = {port.get("port") for port in rule.get("ports") or [{}]}
            if not ports <= {POSTGRES_PORT, DNS_PORT}:
                errors.append(f'NetworkPolicy/{policy["metadata"]["name"]}: Job/postgres-roles may reach ports '
                              f"{sorted(map(str, ports))}; Postgres ({POSTGRES_PORT}) and DNS only")
    if not any(selects(p["spec"]["podSelector"], labels) and POSTGRES_PORT in
               {port.get("port") for rule in p["spec"].get("egress") or [] for port in rule.get("ports") or []}
               for p in policies):
        errors.append("Job/postgres-roles: no NetworkPolicy lets it reach Postgres")
    return errors


def check_secrets(docs, secrets):
    """Every Secret (and key) a workload or the Ingress references is among `secrets`."""
    have = {s["metadata"]["name"]: set(s.get("data", {})) for s in secrets if s["kind"] == "Secret"}
    errors = []
    for workload in (d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")):
        name = f'{workload["kind"]}/{workload["metadata"]["name"]}'
        pod = workload["spec"]["template"]["spec"]
        for volume in pod.get("volumes", []):
            if "secret" not in volume:
                continue
            secret = volume["secret"]["secretName"]
            if secret not in have:
                errors.append(f'{name}: volume {volume["name"]} needs Secret {secret}')
                continue
            for item in volume["secret"].get("items", []):
                if item["key"] not in have[secret]:
                    errors.append(f'{name}: volume {volume["name"]} needs Secret key {secret}/{item["key"]}')
        for container in pod["containers"]:
            for env in container.get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref["key"] not in have.get(ref["name"], set()):
                    errors.append(f'{name}: env {env["name"]} needs Secret key {ref["name"]}/{ref["key"]}')
    for ingress in (d for d in docs if d["kind"] == "Ingress"):
        for tls in ingress["spec"].get("tls", []):
            if tls["secretName"] not in have:
                errors.append(f'Ingress/{ingress["metadata"]["name"]}: needs Secret {tls["secretName"]}')
    return errors


def load(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def main():
    path, *secrets = sys.argv[1:]
    docs = load(path)
    errors = check(docs)
    for secrets_path in secrets:
        errors += check_secrets(docs, load(secrets_path))
    for error in errors:
        print(f"{path}: {error}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
