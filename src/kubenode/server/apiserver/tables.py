"""Server-side printing: meta.k8s.io/v1 Table with upstream's printer columns
(pkg/printers/internalversion/printers.go) for the kinds `kubectl get` shows most.
Columns of priority 1 appear with `-o wide`. Kinds without printers get NAME and AGE
(upstream's default table convertor: Name, Created At)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubenode.api.meta import parse_time
from kubenode.server.apiserver.registry.resources import ResourceInfo

Column = tuple[str, str, int, str]  # name, type, priority, format
Row = list[Any]


def human_duration(seconds: float) -> str:
    """upstream duration.HumanDuration."""
    s = int(seconds)
    if s < 0:
        return "<invalid>"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        rem = s % 60
        return f"{m}m{rem}s" if rem else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        rem = (s % 3600) // 60
        return f"{h}h{rem}m" if rem else f"{h}h"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        rem = h % 24
        return f"{h // 24}d{rem}h" if rem else f"{h // 24}d"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    if h < 24 * 365 * 8:
        dy = (h // 24) % 365
        return f"{h // 24 // 365}y{dy}d" if dy else f"{h // 24 // 365}y"
    return f"{h // 24 // 365}y"


def age(obj: dict[str, Any], now: float) -> str:
    ts = (obj.get("metadata") or {}).get("creationTimestamp")
    if not ts:
        return "<unknown>"
    return human_duration(now - parse_time(ts))


def _pod_row(pod: dict[str, Any], now: float) -> Row:
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    containers = spec.get("containers") or []
    reason = status.get("reason") or status.get("phase") or ""
    restarts = 0
    ready = 0
    last_restart: float | None = None
    init_statuses = status.get("initContainerStatuses") or []
    initializing = False
    for i, cs in enumerate(init_statuses):
        restarts += int(cs.get("restartCount") or 0)
        st = cs.get("state") or {}
        term = st.get("terminated")
        if term and term.get("exitCode") == 0:
            continue
        initializing = True
        if term:
            reason = ("Init:" + term["reason"]) if term.get("reason") else \
                f"Init:ExitCode:{term.get('exitCode')}"
        elif (st.get("waiting") or {}).get("reason") and \
                st["waiting"]["reason"] != "PodInitializing":
            reason = "Init:" + st["waiting"]["reason"]
        else:
            reason = f"Init:{i}/{len(spec.get('initContainers') or [])}"
        break
    if not initializing:
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            restarts += int(cs.get("restartCount") or 0)
            lt = (cs.get("lastState") or {}).get("terminated") or {}
            if lt.get("finishedAt"):
                t = parse_time(lt["finishedAt"])
                last_restart = t if last_restart is None else max(last_restart, t)
            st = cs.get("state") or {}
            if (st.get("waiting") or {}).get("reason"):
                reason = st["waiting"]["reason"]
            elif (st.get("terminated") or {}).get("reason"):
                reason = st["terminated"]["reason"]
            elif st.get("terminated"):
                term = st["terminated"]
                reason = f"Signal:{term['signal']}" if term.get("signal") else \
                    f"ExitCode:{term.get('exitCode')}"
            elif cs.get("ready") and st.get("running"):
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running"
    md = pod.get("metadata") or {}
    if md.get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    restarts_str = str(restarts)
    if last_restart is not None and restarts:
        restarts_str = f"{restarts} ({human_duration(now - last_restart)} ago)"
    ips = [p.get("ip") for p in status.get("podIPs") or [] if p.get("ip")]
    ip = ips[0] if ips else (status.get("podIP") or "<none>")
    gates = spec.get("readinessGates") or []
    gates_str = "<none>"
    if gates:
        conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        ok = sum(1 for g in gates if conds.get(g.get("conditionType")) == "True")
        gates_str = f"{ok}/{len(gates)}"
    return [md.get("name", ""), f"{ready}/{len(containers)}", reason, restarts_str,
            age(pod, now), ip, spec.get("nodeName") or "<none>",
            status.get("nominatedNodeName") or "<none>", gates_str]


POD_COLUMNS: list[Column] = [
    ("Name", "string", 0, "name"), ("Ready", "string", 0, ""), ("Status", "string", 0, ""),
    ("Restarts", "string", 0, ""), ("Age", "string", 0, ""), ("IP", "string", 1, ""),
    ("Node", "string", 1, ""), ("Nominated Node", "string", 1, ""),
    ("Readiness Gates", "string", 1, "")]


def _node_row(node: dict[str, Any], now: float) -> Row:
    status = node.get("status") or {}
    spec = node.get("spec") or {}
    md = node.get("metadata") or {}
    states = []
    for c in status.get("conditions") or []:
        if c.get("type") == "Ready":
            states.append("Ready" if c.get("status") == "True" else "NotReady")
    if not states:
        states.append("Unknown")
    if spec.get("unschedulable"):
        states.append("SchedulingDisabled")
    labels = md.get("labels") or {}
    roles = sorted({k.split("/", 1)[1] for k in labels
                    if k.startswith("node-role.kubernetes.io/") and "/" in k}
                   | ({labels["kubernetes.io/role"]} if "kubernetes.io/role" in labels
                      else set()))
    info = status.get("nodeInfo") or {}
    addrs = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    return [md.get("name", ""), ",".join(states), ",".join(roles) or "<none>", age(node, now),
            info.get("kubeletVersion", ""), addrs.get("InternalIP", "<none>"),
            addrs.get("ExternalIP", "<none>"), info.get("osImage") or "<unknown>",
            info.get("kernelVersion") or "<unknown>",
            info.get("containerRuntimeVersion") or "<unknown>"]


NODE_COLUMNS: list[Column] = [
    ("Name", "string", 0, "name"), ("Status", "string", 0, ""), ("Roles", "string", 0, ""),
    ("Age", "string", 0, ""), ("Version", "string", 0, ""), ("Internal-IP", "string", 1, ""),
    ("External-IP", "string", 1, ""), ("OS-Image", "string", 1, ""),
    ("Kernel-Version", "string", 1, ""), ("Container-Runtime", "string", 1, "")]


def _selector_str(sel: dict[str, Any] | None) -> str:
    if not sel:
        return "<none>"
    if "matchLabels" in sel or "matchExpressions" in sel:
        parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
        for e in sel.get("matchExpressions") or []:
            op = e.get("operator")
            vals = ",".join(e.get("values") or [])
            if op == "In":
                parts.append(f"{e['key']} in ({vals})")
            elif op == "NotIn":
                parts.append(f"{e['key']} notin ({vals})")
            elif op == "Exists":
                parts.append(e["key"])
            else:
                parts.append(f"!{e['key']}")
        return ",".join(parts) or "<none>"
    return ",".join(f"{k}={v}" for k, v in sorted(sel.items()))


def _service_row(svc: dict[str, Any], now: float) -> Row:
    spec = svc.get("spec") or {}
    status = svc.get("status") or {}
    stype = spec.get("type", "ClusterIP")
    external = "<none>"
    if stype == "ExternalName":
        external = spec.get("externalName", "")
    elif spec.get("externalIPs"):
        external = ",".join(spec["externalIPs"])
    ing = (status.get("loadBalancer") or {}).get("ingress") or []
    if stype == "LoadBalancer":
        lbs = [i.get("ip") or i.get("hostname") for i in ing]
        external = ",".join([*lbs, *spec.get("externalIPs", [])]) or "<pending>"
    ports = []
    for p in spec.get("ports") or []:
        s = f"{p.get('port')}"
        if p.get("nodePort"):
            s += f":{p['nodePort']}"
        ports.append(f"{s}/{p.get('protocol', 'TCP')}")
    return [svc["metadata"].get("name", ""), stype, spec.get("clusterIP") or "<none>", external,
            ",".join(ports) or "<none>", age(svc, now), _selector_str(spec.get("selector"))]


SERVICE_COLUMNS: list[Column] = [
    ("Name", "string", 0, "name"), ("Type", "string", 0, ""), ("Cluster-IP", "string", 0, ""),
    ("External-IP", "string", 0, ""), ("Port(s)", "string", 0, ""), ("Age", "string", 0, ""),
    ("Selector", "string", 1, "")]


def _containers_cols(tmpl: dict[str, Any]) -> tuple[str, str]:
    cs = ((tmpl.get("spec") or {}).get("containers")) or []
    return ",".join(c.get("name", "") for c in cs), ",".join(c.get("image", "") for c in cs)


def _deployment_row(d: dict[str, Any], now: float) -> Row:
    spec, st = d.get("spec") or {}, d.get("status") or {}
    names, images = _containers_cols(spec.get("template") or {})
    return [d["metadata"]["name"], f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
            st.get("updatedReplicas", 0), st.get("availableReplicas", 0), age(d, now), names,
            images, _selector_str(spec.get("selector"))]


DEPLOYMENT_COLUMNS: list[Column] = [
    ("Name", "string", 0, "name"), ("Ready", "string", 0, ""),
    ("Up-to-date", "integer", 0, ""), ("Available", "integer", 0, ""), ("Age", "string", 0, ""),
    ("Containers", "string", 1, ""), ("Images", "string", 1, ""),
    ("Selector", "string", 1, "")]


def _replicaset_row(d: dict[str, Any], now: float) -> Row:
    spec, st = d.get("spec") or {}, d.get("status") or {}
    names, images = _containers_cols(spec.get("template") or {})
    return [d["metadata"]["name"], spec.get("replicas", 1), st.get("replicas", 0),
            st.get("readyReplicas", 0), age(d, now), names, images,
            _selector_str(spec.get("selector"))]


REPLICASET_COLUMNS: list[Column] = [
    ("Name", "string", 0, "name"), ("Desired", "integer", 0, ""),
    ("Current", "integer", 0, ""), ("Ready", "integer", 0, ""), ("Age", "string", 0, ""),
    ("Containers", "string", 1, ""), ("Images", "string", 1, ""),
    ("Selector", "string", 1, "")]


def _daemonset_row(d: dict[str, Any], now: float) -> Row:
    spec, st = d.get("spec") or {}, d.get("status") or {}
    tmpl = spec.get("template") or {}
    names, images = _containers_cols(tmpl)
    ns = (tmpl.get("spec") or {}).get("nodeSelector") or {}
    return [d["metadata"]["name"], st.get("desiredNumberScheduled", 0),
            st.get("currentNumberScheduled", 0), st.get("numberReady", 0),
            st.get("updatedNumberScheduled", 0), st.get("numberAvailable", 0),
            ",".join(f"{k}={v}" for k, v in sorted(ns.items())) or "<none>", age(d, now),
            names, images, _selector_str(spec.get("selector"))]


DAEMONSET_COLUMNS: list[Column] = [
    ("Name", "string", 0, "name"), ("Desired", "integer", 0, ""),
    ("Current", "integer", 0, ""), ("Ready", "integer", 0, ""),
    ("Up-to-date", "integer", 0, ""), ("Available", "integer", 0, ""),
    ("Node Selector", "string", 0, ""), ("Age", "string", 0, ""),
    ("Containers", "string", 1, ""), ("Images", "string", 1, ""),
    ("Selector", "string", 1, "")]


def _statefulset_row(d: dict[str, Any], now: float) -> Row:
    spec, st = d.get("spec") or {}, d.get("status") or {}
    names, images = _containers_cols(spec.get("template") or {})
    return [d["metadata"]["name"], f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
            age(d, now), names, images]


STATEFULSET_COLUMNS: list[Column] = [
    ("Name", "string", 0, "name"), ("Ready", "string", 0, ""), ("Age", "string", 0, ""),
    ("Containers", "string", 1, ""), ("Images", "string", 1, "")]


def _job_row(j: dict[str, Any], now: float) -> Row:
    spec, st = j.get("spec") or {}, j.get("status") or {}
    names, images = _containers_cols(spec.get("template") or {})
    comps = spec.get("completions")
    status = "Running"
    for c in st.get("conditions") or []:
        if c.get("status") == "True" and c.get("type") in ("Complete", "Failed", "Suspended"):
            status = c["type"]
    dur = ""
    if st.get("startTime"):
        end = parse_time(st["completionTime"]) if st.get("completionTime") else now
        dur = human_duration(end - parse_time(st["startTime"]))
    return [j["metadata"]["name"], status,
            f"{st.get('succeeded', 0)}/{comps}" if comps is not None
            else f"{st.get('succeeded', 0)}/1 of {spec.get('parallelism', 1)}",
            dur, age(j, now), names, images, _selector_str(spec.get("selector"))]


JOB_COLUMNS: list[Column] = [
    ("Name", "string", 0, "name"), ("Status", "string", 0, ""),
    ("Completions", "string", 0, ""), ("Duration", "string", 0, ""), ("Age", "string", 0, ""),
    ("Containers", "string", 1, ""), ("Images", "string", 1, ""),
    ("Selector", "string", 1, "")]


def _event_row(e: dict[str, Any], now: float) -> Row:
    io = e.get("involvedObject") or e.get("regarding") or {}
    last = e.get("lastTimestamp") or e.get("eventTime") or \
        (e.get("metadata") or {}).get("creationTimestamp")
    first = e.get("firstTimestamp") or e.get("eventTime") or last
    last_s = human_duration(now - parse_time(last)) if last else "<unknown>"
    first_s = human_duration(now - parse_time(first)) if first else "<unknown>"
    count = e.get("count") or (e.get("series") or {}).get("count") or 1
    src = e.get("source") or {}
    source = src.get("component", "") + (f", {src['host']}" if src.get("host") else "")
    return [last_s, e.get("type", ""), e.get("reason", ""),
            f"{io.get('kind', '').lower()}/{io.get('name', '')}", io.get("fieldPath", ""),
            source or e.get("reportingComponent", ""),
            e.get("message") or e.get("note") or "", first_s, count,
            e["metadata"].get("name", "")]


EVENT_COLUMNS: list[Column] = [
    ("Last Seen", "string", 0, ""), ("Type", "string", 0, ""), ("Reason", "string", 0, ""),
    ("Object", "string", 0, ""), ("Subobject", "string", 1, ""), ("Source", "string", 1, ""),
    ("Message", "string", 0, ""), ("First Seen", "string", 1, ""), ("Count", "string", 1, ""),
    ("Name", "string", 1, "name")]


def _namespace_row(n: dict[str, Any], now: float) -> Row:
    return [n["metadata"]["name"], (n.get("status") or {}).get("phase", ""), age(n, now)]


def _endpoints_row(e: dict[str, Any], now: float) -> Row:
    eps = []
    for s in e.get("subsets") or []:
        for a in s.get("addresses") or []:
            for p in s.get("ports") or [{}]:
                eps.append(f"{a.get('ip')}:{p.get('port')}" if p else a.get("ip"))
    shown = ",".join(eps[:3]) + (f" + {len(eps) - 3} more..." if len(eps) > 3 else "")
    return [e["metadata"]["name"], shown or "<none>", age(e, now)]


def _configmap_row(c: dict[str, Any], now: float) -> Row:
    return [c["metadata"]["name"], len(c.get("data") or {}) + len(c.get("binaryData") or {}),
            age(c, now)]


def _secret_row(s: dict[str, Any], now: float) -> Row:
    return [s["metadata"]["name"], s.get("type", "Opaque"), len(s.get("data") or {}),
            age(s, now)]


def _sa_row(s: dict[str, Any], now: float) -> Row:
    return [s["metadata"]["name"], len(s.get("secrets") or []), age(s, now)]


def _lease_row(lease: dict[str, Any], now: float) -> Row:
    return [lease["metadata"]["name"], (lease.get("spec") or {}).get("holderIdentity", ""),
            age(lease, now)]


def _slice_row(s: dict[str, Any], now: float) -> Row:
    ports = ",".join(str(p.get("port")) for p in s.get("ports") or []) or "<unset>"
    addrs = [a for ep in s.get("endpoints") or [] for a in ep.get("addresses") or []]
    shown = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "")
    return [s["metadata"]["name"], s.get("addressType", ""), ports, shown or "<unset>",
            age(s, now)]


def _csr_row(c: dict[str, Any], now: float) -> Row:
    spec = c.get("spec") or {}
    conds = [x.get("type") for x in (c.get("status") or {}).get("conditions") or []]
    cond = ",".join(conds) or "Pending"
    if (c.get("status") or {}).get("certificate") and "Approved" in conds:
        cond += ",Issued"
    dur = spec.get("expirationSeconds")
    return [c["metadata"]["name"], age(c, now), spec.get("signerName", ""),
            spec.get("username", ""), human_duration(dur) if dur else "<none>", cond]


_ACCESS_MODES = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX",
                 "ReadWriteOncePod": "RWOP"}


def _access_modes(modes: list[str] | None) -> str:
    return ",".join(_ACCESS_MODES.get(m, m) for m in modes or [])


def _pv_row(pv: dict[str, Any], now: float) -> Row:
    spec, status = pv.get("spec") or {}, pv.get("status") or {}
    ref = spec.get("claimRef") or {}
    claim = f"{ref.get('namespace')}/{ref.get('name')}" if ref else ""
    return [pv["metadata"]["name"], (spec.get("capacity") or {}).get("storage", ""),
            _access_modes(spec.get("accessModes")),
            spec.get("persistentVolumeReclaimPolicy", ""), status.get("phase", ""), claim,
            spec.get("storageClassName", ""),
            spec.get("volumeAttributesClassName") or "<unset>", status.get("reason", ""),
            age(pv, now), spec.get("volumeMode", "Filesystem")]


def _pvc_row(pvc: dict[str, Any], now: float) -> Row:
    spec, status = pvc.get("spec") or {}, pvc.get("status") or {}
    bound = status.get("phase") == "Bound"
    return [pvc["metadata"]["name"], status.get("phase", ""), spec.get("volumeName", ""),
            (status.get("capacity") or {}).get("storage", "") if bound else "",
            _access_modes(status.get("accessModes")) if bound else "",
            spec.get("storageClassName") or "",
            spec.get("volumeAttributesClassName") or "<unset>", age(pvc, now),
            spec.get("volumeMode", "Filesystem")]


def _generic_row(o: dict[str, Any], now: float) -> Row:
    return [o["metadata"].get("name", ""), age(o, now)]


PRINTERS: dict[str, tuple[list[Column], Callable[[dict[str, Any], float], Row]]] = {
    "Pod": (POD_COLUMNS, _pod_row),
    "Node": (NODE_COLUMNS, _node_row),
    "Service": (SERVICE_COLUMNS, _service_row),
    "Deployment": (DEPLOYMENT_COLUMNS, _deployment_row),
    "ReplicaSet": (REPLICASET_COLUMNS, _replicaset_row),
    "DaemonSet": (DAEMONSET_COLUMNS, _daemonset_row),
    "StatefulSet": (STATEFULSET_COLUMNS, _statefulset_row),
    "Job": (JOB_COLUMNS, _job_row),
    "Event": (EVENT_COLUMNS, _event_row),
    "Namespace": ([("Name", "string", 0, "name"), ("Status", "string", 0, ""),
                   ("Age", "string", 0, "")], _namespace_row),
    "Endpoints": ([("Name", "string", 0, "name"), ("Endpoints", "string", 0, ""),
                   ("Age", "string", 0, "")], _endpoints_row),
    "ConfigMap": ([("Name", "string", 0, "name"), ("Data", "string", 0, ""),
                   ("Age", "string", 0, "")], _configmap_row),
    "Secret": ([("Name", "string", 0, "name"), ("Type", "string", 0, ""),
                ("Data", "string", 0, ""), ("Age", "string", 0, "")], _secret_row),
    "ServiceAccount": ([("Name", "string", 0, "name"), ("Secrets", "string", 0, ""),
                        ("Age", "string", 0, "")], _sa_row),
    "Lease": ([("Name", "string", 0, "name"), ("Holder", "string", 0, ""),
               ("Age", "string", 0, "")], _lease_row),
    "EndpointSlice": ([("Name", "string", 0, "name"), ("AddressType", "string", 0, ""),
                       ("Ports", "string", 0, ""), ("Endpoints", "string", 0, ""),
                       ("Age", "string", 0, "")], _slice_row),
    "CertificateSigningRequest": ([("Name", "string", 0, "name"), ("Age", "string", 0, ""),
                                   ("SignerName", "string", 0, ""),
                                   ("Requestor", "string", 0, ""),
                                   ("RequestedDuration", "string", 0, ""),
                                   ("Condition", "string", 0, "")], _csr_row),
    "PersistentVolume": ([("Name", "string", 0, "name"), ("Capacity", "string", 0, ""),
                          ("Access Modes", "string", 0, ""), ("Reclaim Policy", "string", 0, ""),
                          ("Status", "string", 0, ""), ("Claim", "string", 0, ""),
                          ("StorageClass", "string", 0, ""),
                          ("VolumeAttributesClass", "string", 0, ""),
                          ("Reason", "string", 0, ""), ("Age", "string", 0, ""),
                          ("VolumeMode", "string", 1, "")], _pv_row),
    "PersistentVolumeClaim": ([("Name", "string", 0, "name"), ("Status", "string", 0, ""),
                               ("Volume", "string", 0, ""), ("Capacity", "string", 0, ""),
                               ("Access Modes", "string", 0, ""),
                               ("StorageClass", "string", 0, ""),
                               ("VolumeAttributesClass", "string", 0, ""),
                               ("Age", "string", 0, ""), ("VolumeMode", "string", 1, "")],
                              _pvc_row),
}

GENERIC: tuple[list[Column], Callable[[dict[str, Any], float], Row]] = (
    [("Name", "string", 0, "name"), ("Created At", "date", 0, "")],
    lambda o, now: [o["metadata"].get("name", ""),
                    (o.get("metadata") or {}).get("creationTimestamp", "")])


def _partial(obj: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata") or {}}


def to_table(res: ResourceInfo, items: list[dict[str, Any]], list_meta: dict[str, Any], *,
             include: str, now: float, headers: bool = True) -> dict[str, Any]:
    columns, row_fn = PRINTERS.get(res.kind, GENERIC)
    rows = []
    for obj in items:
        try:
            cells = row_fn(obj, now)
        except (KeyError, TypeError, ValueError, AttributeError):
            cells = [obj.get("metadata", {}).get("name", "")] + [""] * (len(columns) - 1)
        row: dict[str, Any] = {"cells": cells}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = _partial(obj)
        rows.append(row)
    table: dict[str, Any] = {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                             "metadata": {k: v for k, v in list_meta.items()
                                          if k in ("resourceVersion", "continue",
                                                   "remainingItemCount")},
                             "columnDefinitions": [], "rows": rows}
    if headers:
        table["columnDefinitions"] = [
            {"name": n, "type": t, "format": f, "description": "", "priority": p}
            for n, t, p, f in columns]
    return table
