"""Reference normalisation as upstream (distribution/reference), and endpoint choice."""

from __future__ import annotations

import hashlib

import pytest

from kubenode.runtime.images.auth import Credentials, parse_challenge
from kubenode.runtime.images.reference import InvalidReference, is_image_id, parse
from kubenode.runtime.images.registry import RegistryHosts
from kubenode.runtime.images.service import chain_id

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("raw", "full", "familiar"), [
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("user/app:v1", "docker.io/user/app:v1", "user/app:v1"),
    ("index.docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"),
    ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
    ("localhost:5000/a/b/c:t", "localhost:5000/a/b/c:t", "localhost:5000/a/b/c:t"),
    ("127.0.0.1:5000/x@" + D, "127.0.0.1:5000/x@" + D, "127.0.0.1:5000/x@" + D),
    ("busybox:1@" + D, "docker.io/library/busybox:1@" + D, "busybox:1@" + D),
    ("my-reg.example.com/team/app_x.y:v1-rc", "my-reg.example.com/team/app_x.y:v1-rc",
     "my-reg.example.com/team/app_x.y:v1-rc"),
])
def test_parse_normalizes(raw: str, full: str, familiar: str) -> None:
    ref = parse(raw)
    assert str(ref) == full
    assert ref.familiar() == familiar


@pytest.mark.parametrize("bad", ["", "Busybox", "busybox:", "busybox@sha256:xyz", "a b",
                                 "docker.io/UPPER/x", "x:" + "t" * 200, "/busybox", "a//b"])
def test_parse_rejects(bad: str) -> None:
    with pytest.raises(InvalidReference, match="invalid reference format"):
        parse(bad)


def test_object_and_ids() -> None:
    assert parse("busybox").object == "latest"
    assert parse("busybox@" + D).object == D and parse("busybox@" + D).tag is None
    assert is_image_id(D) and is_image_id("ab" * 32) and not is_image_id("busybox")


def test_endpoints_mirrors_and_insecure() -> None:
    hosts = RegistryHosts(insecure=("reg.internal:5000",),
                          mirrors={"docker.io": "http://127.0.0.1:5000"})
    assert hosts.endpoints("docker.io") == ["http://127.0.0.1:5000",
                                            "https://registry-1.docker.io"]
    assert hosts.endpoints("reg.internal:5000") == ["http://reg.internal:5000"]
    assert hosts.endpoints("quay.io") == ["https://quay.io"]
    assert hosts.endpoints("localhost:5000") == ["http://localhost:5000"]
    assert hosts.endpoints("127.0.0.1:35000") == ["http://127.0.0.1:35000"]


def test_challenge_and_credentials() -> None:
    ch = parse_challenge('Bearer realm="https://auth.example/token",service="reg",'
                         'scope="repository:a/b:pull,push"')
    assert ch.scheme == "bearer" and ch.realm == "https://auth.example/token"
    assert ch.params["scope"] == "repository:a/b:pull,push"
    assert parse_challenge('Basic realm="x"').scheme == "basic"
    c = Credentials.from_cri(auth="dXNlcjpwOnc=")  # user:p:w
    assert (c.username, c.password) == ("user", "p:w")
    with pytest.raises(ValueError, match="base64"):
        Credentials.from_cri(auth="bm9jb2xvbg==")  # "nocolon"


def test_chain_id_as_image_spec() -> None:
    a, b, c = ("sha256:" + hashlib.sha256(x).hexdigest() for x in (b"a", b"b", b"c"))
    ab = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    abc = "sha256:" + hashlib.sha256(f"{ab} {c}".encode()).hexdigest()
    assert chain_id([a]) == a and chain_id([a, b]) == ab and chain_id([a, b, c]) == abc
