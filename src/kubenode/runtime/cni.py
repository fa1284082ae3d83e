"""CNI (spec 1.0.0) for pod sandboxes: the exec protocol against plugin binaries.

Config: the first `*.conflist` (or `*.conf`) in `cni_conf_dir`, in name order. If there is
none, `ensure_default()` writes ours (`10-kubenode.conflist`): bridge (isGateway, ipMasq,
hairpinMode) + host-local IPAM on the pod CIDR with its `dataDir` under the runtime root,
+ portmap (capability `portMappings`). The loopback plugin runs separately for `lo`.

ADD runs the plugins in order, each with the previous result as `prevResult`; DEL runs
them in reverse with the cached ADD result. A failing plugin's error message is surfaced
verbatim in `CNIError`."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CNI_VERSION = "1.0.0"
DEFAULT_CONF_NAME = "10-kubenode.conflist"
DEFAULT_NETWORK_NAME = "kubenode"


class CNIError(Exception):
    pass


@dataclass(frozen=True, kw_only=True)
class PodRef:
    namespace: str
    name: str
    uid: str
    sandbox_id: str


@dataclass(kw_only=True)
class AddResult:
    ips: list[str] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)


class CNI:
    def __init__(self, *, conf_dir: Path, bin_dir: Path, data_dir: Path, bridge: str,
                 pod_cidr: str) -> None:
        self.conf_dir = conf_dir
        self.bin_dir = bin_dir
        self.data_dir = data_dir
        self.bridge = bridge
        self.pod_cidr = pod_cidr

    # ---- configuration -------------------------------------------------------------------
    def default_conflist(self) -> dict[str, Any]:
        return {
            "cniVersion": CNI_VERSION,
            "name": DEFAULT_NETWORK_NAME,
            "plugins": [
                {
                    "type": "bridge", "bridge": self.bridge, "isGateway": True,
                    "ipMasq": True, "hairpinMode": True,
                    "ipam": {
                        "type": "host-local", "dataDir": str(self.data_dir),
                        "ranges": [[{"subnet": self.pod_cidr}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
            ],
        }

    def ensure_default(self) -> None:
        """Write our conflist when the directory has no network config at all."""
        if self._conf_files():
            return
        self._write_default()

    def update_pod_cidr(self, pod_cidr: str) -> None:
        """UpdateRuntimeConfig: a new pod CIDR rewrites our default conflist (not a user's)."""
        if not pod_cidr or pod_cidr == self.pod_cidr:
            return
        self.pod_cidr = pod_cidr
        ours = self.conf_dir / DEFAULT_CONF_NAME
        files = self._conf_files()
        if not files or files[0] == ours:
            self._write_default()

    def _write_default(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        path = self.conf_dir / DEFAULT_CONF_NAME
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.default_conflist(), indent=2) + "\n")
        os.replace(tmp, path)

    def _conf_files(self) -> list[Path]:
        if not self.conf_dir.is_dir():
            return []
        return sorted(p for p in self.conf_dir.iterdir()
                      if p.suffix in (".conflist", ".conf", ".json") and p.is_file())

    def load(self) -> dict[str, Any]:
        files = self._conf_files()
        if not files:
            raise CNIError(f"no network config found in {self.conf_dir}")
        path = files[0]
        try:
            conf = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise CNIError(f"invalid network config {path}: {err}") from err
        if "plugins" not in conf:  # a single-plugin .conf
            conf = {"cniVersion": conf.get("cniVersion", CNI_VERSION),
                    "name": conf.get("name", ""), "plugins": [conf]}
        return conf

    def status(self) -> str | None:
        """None when ready, else why not (the NetworkPluginNotReady message)."""
        try:
            conf = self.load()
        except CNIError as err:
            return f"Network plugin returns error: cni plugin not initialized: {err}"
        missing = [p["type"] for p in conf["plugins"]
                   if not (self.bin_dir / p.get("type", "")).is_file()]
        if not (self.bin_dir / "loopback").is_file():
            missing.append("loopback")
        if missing:
            return ("Network plugin returns error: cni plugin not initialized: "
                    f"failed to find plugin {', '.join(missing)} in path [{self.bin_dir}]")
        return None

    # ---- operations ----------------------------------------------------------------------
    def _env(self, command: str, pod: PodRef, netns: Path, ifname: str) -> dict[str, str]:
        args = (f"IgnoreUnknown=1;K8S_POD_NAMESPACE={pod.namespace};K8S_POD_NAME={pod.name};"
                f"K8S_POD_INFRA_CONTAINER_ID={pod.sandbox_id};K8S_POD_UID={pod.uid}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env.update(CNI_COMMAND=command, CNI_CONTAINERID=pod.sandbox_id, CNI_NETNS=str(netns),
                   CNI_IFNAME=ifname, CNI_PATH=str(self.bin_dir), CNI_ARGS=args)
        return env

    async def _exec(self, plugin: dict[str, Any], net: dict[str, Any], command: str,
                    env: dict[str, str], prev: dict[str, Any] | None,
                    runtime_config: dict[str, Any]) -> dict[str, Any]:
        ptype = plugin.get("type", "")
        conf = dict(plugin)
        conf["cniVersion"] = net.get("cniVersion", CNI_VERSION)
        conf["name"] = net.get("name", "")
        caps = conf.pop("capabilities", {}) or {}
        rc = {k: v for k, v in runtime_config.items() if caps.get(k)}
        if rc:
            conf["runtimeConfig"] = rc
        if prev is not None:
            conf["prevResult"] = prev
        binary = self.bin_dir / ptype
        if not binary.is_file():
            raise CNIError(f'plugin type="{ptype}" failed ({command.lower()}): '
                           f"failed to find plugin {ptype!r} in path [{self.bin_dir}]")
        proc = await asyncio.create_subprocess_exec(
            str(binary), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env)
        out, err = await proc.communicate(json.dumps(conf).encode())
        if proc.returncode != 0:
            msg = err.decode().strip()
            try:
                e = json.loads(out)
                msg = e.get("msg", "") + (f"; {e['details']}" if e.get("details") else "")
            except ValueError:
                msg = msg or out.decode().strip()
            raise CNIError(f'plugin type="{ptype}" name="{conf["name"]}" failed '
                           f"({command.lower()}): {msg}")
        if not out.strip():
            return prev or {}
        result: dict[str, Any] = json.loads(out)
        return result

    async def add(self, *, pod: PodRef, netns: Path, port_mappings: list[dict[str, Any]],
                  ifname: str = "eth0") -> AddResult:
        net = self.load()
        lo: dict[str, Any] = {"cniVersion": CNI_VERSION, "name": "cni-loopback"}
        await self._exec({"type": "loopback"}, lo, "ADD", self._env("ADD", pod, netns, "lo"),
                         None, {})
        env = self._env("ADD", pod, netns, ifname)
        rc: dict[str, Any] = {"portMappings": port_mappings} if port_mappings else {}
        prev: dict[str, Any] | None = None
        for plugin in net["plugins"]:
            prev = await self._exec(plugin, net, "ADD", env, prev, rc)
        result = prev or {}
        ips = [ip["address"].split("/")[0] for ip in result.get("ips", [])]
        ips.sort(key=lambda a: ":" in a)  # IPv4 first, as the primary pod IP
        return AddResult(ips=ips, result=result)

    async def delete(self, *, pod: PodRef, netns: Path | None, prev: dict[str, Any],
                     port_mappings: list[dict[str, Any]], ifname: str = "eth0") -> None:
        net = self.load()
        env = self._env("DEL", pod, netns if netns else Path(""), ifname)
        if netns is None:
            env["CNI_NETNS"] = ""
        rc: dict[str, Any] = {"portMappings": port_mappings} if port_mappings else {}
        for plugin in reversed(net["plugins"]):
            await self._exec(plugin, net, "DEL", env, prev or None, rc)

    async def check(self, *, pod: PodRef, netns: Path, prev: dict[str, Any],
                    port_mappings: list[dict[str, Any]], ifname: str = "eth0") -> None:
        net = self.load()
        env = self._env("CHECK", pod, netns, ifname)
        rc: dict[str, Any] = {"portMappings": port_mappings} if port_mappings else {}
        for plugin in net["plugins"]:
            await self._exec(plugin, net, "CHECK", env, prev, rc)
