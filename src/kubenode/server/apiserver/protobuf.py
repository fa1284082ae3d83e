"""Decoding `application/vnd.kubernetes.protobuf` request bodies.

kubectl >= 1.32 sends built-in objects (`kubectl create configmap|secret|namespace|
deployment|...`, `auth can-i`, `auth whoami`, `drain`, `create token`) as Kubernetes
protobuf: the 4-byte magic `k8s\\0`, then a `runtime.Unknown` envelope (typeMeta = 1
{apiVersion = 1, kind = 2}, raw = 2) whose `raw` is the object's message.

The message schemas are the `k8s.io/api/*` and `k8s.io/apimachinery/*` proto file
descriptors that Go binaries built with them carry (gzip-compressed
`FileDescriptorProto`s). `DescriptorSource.load()` reads them from the kubectl binary on
this machine (`KUBENODE_PROTO_DESCRIPTORS` may name another binary), once, lazily; without
one, protobuf bodies are answered 415 as before. Messages are converted to the JSON form:
Time -> RFC 3339, Quantity -> string, IntOrString -> int|str, RawExtension -> JSON,
bytes -> base64; empty strings, lists, messages and zero Times dropped.
"""

from __future__ import annotations

import base64
import datetime as dt
import glob
import json
import logging
import os
import shutil
import zlib
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor, descriptor_pb2, descriptor_pool

log = logging.getLogger(__name__)

MAGIC = b"k8s\x00"


class NoDescriptorsError(Exception):
    """No proto descriptors on this machine: protobuf bodies cannot be decoded."""
_GZIP = b"\x1f\x8b\x08\x00\x00\x00\x00\x00"
_META = "k8s.io.apimachinery.pkg.apis.meta.v1."


def candidate_binaries() -> list[str]:
    env = os.environ.get("KUBENODE_PROTO_DESCRIPTORS")
    out = [env] if env else []
    on_path = shutil.which("kubectl")
    if on_path:
        out.append(os.path.realpath(on_path))
    out += sorted(glob.glob("/usr/lib/google-cloud-sdk/bin/kubectl.1.*"), reverse=True)
    return out


def scan_binary(path: str) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    with open(path, "rb") as f:
        data = f.read()
    found: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    i = 0
    while True:
        i = data.find(_GZIP, i)
        if i < 0:
            break
        try:
            raw = zlib.decompressobj(31).decompress(data[i:i + 4_000_000])
            fd = descriptor_pb2.FileDescriptorProto()
            fd.ParseFromString(raw)
            if fd.name.startswith("k8s.io/") and fd.name.endswith(".proto"):
                found[fd.name] = fd
        except Exception:
            pass
        i += 1
    return found


@dataclass(kw_only=True)
class DescriptorSource:
    pool: descriptor_pool.DescriptorPool | None = None
    tried: bool = False
    files: dict[str, descriptor_pb2.FileDescriptorProto] = field(default_factory=dict)

    def load(self) -> bool:
        if self.tried:
            return self.pool is not None
        self.tried = True
        for path in candidate_binaries():
            try:
                files = scan_binary(path)
            except OSError:
                continue
            if "k8s.io/api/core/v1/generated.proto" in files:
                self.files = files
                break
        if not self.files:
            log.warning("no Kubernetes proto descriptors found; protobuf bodies get 415")
            return False
        pool = descriptor_pool.DescriptorPool()
        added: set[str] = set()

        def add(name: str) -> None:
            if name in added or name not in self.files:
                return
            added.add(name)
            fd = descriptor_pb2.FileDescriptorProto()
            fd.CopyFrom(self.files[name])
            deps = [d for d in fd.dependency if d in self.files]
            del fd.dependency[:]
            fd.dependency.extend(deps)
            del fd.public_dependency[:]
            del fd.weak_dependency[:]
            for dep in deps:
                add(dep)
            pool.Add(fd)

        for name in sorted(self.files):
            try:
                add(name)
            except Exception as err:
                log.debug("descriptor %s not added: %s", name, err)
        self.pool = pool
        return True

    def message_for(self, api_version: str, kind: str) -> descriptor.Descriptor | None:
        if self.pool is None:
            return None
        group, _, version = api_version.rpartition("/")
        if not group:
            pkg = f"k8s.io.api.core.{version}"
        else:
            short = "rbac" if group == "rbac.authorization.k8s.io" else group.split(".")[0]
            pkg = f"k8s.io.api.{short}.{version}"
        for name in (f"{pkg}.{kind}", f"{_META}{kind}"):
            try:
                return self.pool.FindMessageTypeByName(name)
            except KeyError:
                continue
        return None


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    out: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        val: Any
        if wt == 0:
            val, pos = _varint(buf, pos)
        elif wt == 2:
            ln, pos = _varint(buf, pos)
            val = buf[pos:pos + ln]
            pos += ln
        elif wt == 1:
            val = buf[pos:pos + 8]
            pos += 8
        elif wt == 5:
            val = buf[pos:pos + 4]
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wt}")
        out.append((num, wt, val))
    return out


def _signed(n: int, bits: int = 64) -> int:
    return n - (1 << bits) if n >= 1 << (bits - 1) else n


_INT_TYPES = {descriptor.FieldDescriptor.TYPE_INT32, descriptor.FieldDescriptor.TYPE_INT64,
              descriptor.FieldDescriptor.TYPE_UINT32, descriptor.FieldDescriptor.TYPE_UINT64,
              descriptor.FieldDescriptor.TYPE_ENUM}


def _scalar(fd: descriptor.FieldDescriptor, wt: int, val: Any) -> Any:
    t = fd.type
    if t == descriptor.FieldDescriptor.TYPE_STRING:
        return bytes(val).decode()
    if t == descriptor.FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(bytes(val)).decode()
    if t == descriptor.FieldDescriptor.TYPE_BOOL:
        return bool(val)
    if t in _INT_TYPES:
        return _signed(val) if t in (descriptor.FieldDescriptor.TYPE_INT32,
                                     descriptor.FieldDescriptor.TYPE_INT64) else val
    if t in (descriptor.FieldDescriptor.TYPE_DOUBLE, descriptor.FieldDescriptor.TYPE_FLOAT):
        import struct
        return struct.unpack("<d" if wt == 1 else "<f", bytes(val))[0]
    return val


def _special(full_name: str, buf: bytes) -> tuple[bool, Any]:
    if full_name in (_META + "Time", _META + "MicroTime"):
        seconds = nanos = 0
        for num, _, val in _fields(buf):
            if num == 1:
                seconds = _signed(val)
            elif num == 2:
                nanos = val
        if seconds == 0 and nanos == 0:
            return True, None
        t = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
        if full_name.endswith("MicroTime"):
            return True, t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{nanos // 1000:06d}Z"
        return True, t.strftime("%Y-%m-%dT%H:%M:%SZ")
    if full_name == "k8s.io.apimachinery.pkg.api.resource.Quantity":
        for num, _, val in _fields(buf):
            if num == 1:
                return True, bytes(val).decode()
        return True, "0"
    if full_name == "k8s.io.apimachinery.pkg.util.intstr.IntOrString":
        typ, ival, sval = 0, 0, ""
        for num, _, val in _fields(buf):
            if num == 1:
                typ = val
            elif num == 2:
                ival = _signed(val)
            elif num == 3:
                sval = bytes(val).decode()
        return True, sval if typ == 1 else ival
    if full_name == "k8s.io.apimachinery.pkg.runtime.RawExtension":
        for num, _, val in _fields(buf):
            if num == 1:
                try:
                    return True, json.loads(bytes(val))
                except ValueError:
                    return True, None
        return True, None
    if full_name == _META + "Duration":
        for num, _, val in _fields(buf):
            if num == 1:
                return True, f"{_signed(val) / 1e9:g}s"
        return True, "0s"
    return False, None


def decode_message(desc: descriptor.Descriptor, buf: bytes) -> Any:
    special, value = _special(desc.full_name, buf)
    if special:
        return value
    out: dict[str, Any] = {}
    by_num = {f.number: f for f in desc.fields}
    for num, wt, val in _fields(buf):
        fd = by_num.get(num)
        if fd is None:
            continue
        name = fd.json_name or fd.name
        if fd.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
            mt = fd.message_type
            if mt.GetOptions().map_entry:
                kf, vf = mt.fields_by_name["key"], mt.fields_by_name["value"]
                k: Any = ""
                v: Any = None
                for n2, w2, v2 in _fields(bytes(val)):
                    if n2 == 1:
                        k = _scalar(kf, w2, v2)
                    elif n2 == 2:
                        v = decode_message(vf.message_type, bytes(v2)) \
                            if vf.type == descriptor.FieldDescriptor.TYPE_MESSAGE \
                            else _scalar(vf, w2, v2)
                if v is None and vf.type == descriptor.FieldDescriptor.TYPE_STRING:
                    v = ""
                out.setdefault(name, {})[k] = v
                continue
            item = decode_message(mt, bytes(val))
        else:
            if wt == 2 and fd.type != descriptor.FieldDescriptor.TYPE_STRING and \
                    fd.type != descriptor.FieldDescriptor.TYPE_BYTES:
                # packed repeated scalars
                vals: list[Any] = []
                pos = 0
                data = bytes(val)
                while pos < len(data):
                    n, pos = _varint(data, pos)
                    vals.append(_scalar(fd, 0, n))
                out.setdefault(name, []).extend(vals)
                continue
            item = _scalar(fd, wt, val)
        if fd.is_repeated:
            out.setdefault(name, []).append(item)
        else:
            out[name] = item
    return {k: v for k, v in out.items() if v not in ("", [], {}, None)}


def decode_body(source: DescriptorSource, body: bytes) -> dict[str, Any]:
    """Protobuf request body -> the object's JSON form. ValueError when undecodable."""
    if not body.startswith(MAGIC):
        raise ValueError("protobuf body lacks the k8s magic prefix")
    api_version = kind = ""
    raw = b""
    for num, _, val in _fields(body[4:]):
        if num == 1:
            for n2, _, v2 in _fields(bytes(val)):
                if n2 == 1:
                    api_version = bytes(v2).decode()
                elif n2 == 2:
                    kind = bytes(v2).decode()
        elif num == 2:
            raw = bytes(val)
    if not source.load():
        raise NoDescriptorsError("no protobuf descriptors")
    desc = source.message_for(api_version, kind)
    if desc is None:
        raise ValueError(f"no protobuf schema for {api_version}, Kind={kind}")
    obj = decode_message(desc, raw)
    if not isinstance(obj, dict):
        raise ValueError("decoded protobuf is not an object")
    obj["apiVersion"] = api_version
    obj["kind"] = kind
    return obj
