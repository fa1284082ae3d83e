"""Create-only review resources: TokenReview, SubjectAccessReview,
SelfSubjectAccessReview (`kubectl auth can-i`), SelfSubjectRulesReview and
SelfSubjectReview (`kubectl auth whoami`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from kubenode.server.apiserver.authn import UserInfo
from kubenode.server.apiserver.authz import Attributes

if TYPE_CHECKING:
    from kubenode.server.apiserver.server import APIServer

Handler = Callable[[dict[str, Any], UserInfo], Awaitable[dict[str, Any]]]


def handlers(server: APIServer) -> dict[str, Handler]:
    async def access(spec: dict[str, Any], user: UserInfo) -> tuple[bool, str]:
        assert server.authorizer is not None
        ra = spec.get("resourceAttributes")
        na = spec.get("nonResourceAttributes")
        if ra:
            a = Attributes(user=user, verb=ra.get("verb", ""), is_resource=True,
                           group=ra.get("group", ""), resource=ra.get("resource", ""),
                           subresource=ra.get("subresource", ""),
                           namespace=ra.get("namespace", ""), name=ra.get("name", ""))
        else:
            na = na or {}
            a = Attributes(user=user, verb=na.get("verb", ""), is_resource=False,
                           path=na.get("path", ""))
        return await server.authorizer.authorize(a)

    async def self_sar(body: dict[str, Any], user: UserInfo) -> dict[str, Any]:
        allowed, reason = await access(body.get("spec") or {}, user)
        out = dict(body, kind="SelfSubjectAccessReview", apiVersion="authorization.k8s.io/v1")
        out.setdefault("metadata", {}).setdefault("creationTimestamp", None)
        out["status"] = {"allowed": allowed}
        if reason:
            out["status"]["reason"] = reason
        return out

    async def sar(body: dict[str, Any], user: UserInfo) -> dict[str, Any]:
        spec = body.get("spec") or {}
        subject = UserInfo(name=spec.get("user", ""), groups=tuple(spec.get("groups") or ()),
                           uid=spec.get("uid", ""), extra=spec.get("extra") or {})
        allowed, _ = await access(spec, subject)
        out = dict(body, kind="SubjectAccessReview", apiVersion="authorization.k8s.io/v1")
        out.setdefault("metadata", {}).setdefault("creationTimestamp", None)
        out["status"] = {"allowed": allowed}
        return out

    async def rules(body: dict[str, Any], user: UserInfo) -> dict[str, Any]:
        out = dict(body, kind="SelfSubjectRulesReview", apiVersion="authorization.k8s.io/v1")
        masters = "system:masters" in user.groups
        out["status"] = {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"],
                                            "resources": ["*"]}] if masters else [],
                         "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]
                         if masters else [], "incomplete": not masters}
        return out

    async def token_review(body: dict[str, Any], user: UserInfo) -> dict[str, Any]:
        spec = body.get("spec") or {}
        token = spec.get("token", "")
        audiences = spec.get("audiences") or []
        found = await server.authenticator.authenticate_token(token) if token else None
        if found is not None and audiences and token.count(".") == 2:
            found = server.sa_tokens.verify(token, audiences)
        out = dict(body, kind="TokenReview", apiVersion="authentication.k8s.io/v1")
        out.setdefault("metadata", {}).setdefault("creationTimestamp", None)
        if found is None:
            out["status"] = {"authenticated": False, "error": "invalid bearer token"}
        else:
            groups = list(found.groups)
            if "system:authenticated" not in groups:
                groups.append("system:authenticated")
            out["status"] = {"authenticated": True,
                             "user": {"username": found.name, "uid": found.uid,
                                      "groups": groups, **({"extra": found.extra}
                                                           if found.extra else {})},
                             "audiences": audiences or ["https://kubernetes.default.svc"
                                                        ".cluster.local"]}
        return out

    async def whoami(body: dict[str, Any], user: UserInfo) -> dict[str, Any]:
        return {"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": None},
                "status": {"userInfo": user.to_dict()}}

    return {"SelfSubjectAccessReview": self_sar, "SubjectAccessReview": sar,
            "SelfSubjectRulesReview": rules, "TokenReview": token_review,
            "SelfSubjectReview": whoami}
