"""ServiceAccount tokens: JWTs (ES256) signed with the server's key in
`<data-dir>/pki/service-account.key`, as upstream's bound service account tokens
(`iss`, `sub=system:serviceaccount:<ns>:<name>`, `aud`, `exp`, `kubernetes.io` claims).
`TokenIssuer.verify` is an authenticator for bearer tokens.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from kubenode.server.apiserver.authn import UserInfo

ISSUER = "https://kubernetes.default.svc.cluster.local"
AUDIENCE = "https://kubernetes.default.svc.cluster.local"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(kw_only=True)
class TokenIssuer:
    key: ec.EllipticCurvePrivateKey
    clock: Callable[[], float]

    @classmethod
    def from_key_file(cls, path: Path, *, clock: Callable[[], float]) -> TokenIssuer:
        key = serialization.load_pem_private_key(path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(key=key, clock=clock)

    @property
    def kid(self) -> str:
        der = self.key.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
        digest = hashes.Hash(hashes.SHA256())
        digest.update(der)
        return _b64(digest.finalize())

    def issue(self, *, namespace: str, name: str, uid: str, audiences: list[str] | None = None,
              expiration_seconds: int = 3600, pod: dict[str, str] | None = None) -> tuple[str,
                                                                                         int]:
        now = int(self.clock())
        exp = now + expiration_seconds
        k8s: dict[str, Any] = {"namespace": namespace,
                               "serviceaccount": {"name": name, "uid": uid}}
        if pod:
            k8s["pod"] = pod
        claims = {"iss": ISSUER, "sub": f"system:serviceaccount:{namespace}:{name}",
                  "aud": audiences or [AUDIENCE], "exp": exp, "iat": now, "nbf": now,
                  "jti": str(uuid.uuid4()), "kubernetes.io": k8s}
        header = {"alg": "ES256", "kid": self.kid}
        signing_input = f"{_b64(json.dumps(header).encode())}." \
                        f"{_b64(json.dumps(claims).encode())}"
        der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{signing_input}.{_b64(sig)}", exp

    def verify(self, token: str, audiences: list[str] | None = None) -> UserInfo | None:
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            header = json.loads(_unb64(parts[0]))
            claims = json.loads(_unb64(parts[1]))
            sig = _unb64(parts[2])
        except (ValueError, json.JSONDecodeError):
            return None
        if header.get("alg") != "ES256" or len(sig) != 64 or claims.get("iss") != ISSUER:
            return None
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                   int.from_bytes(sig[32:], "big"))
        try:
            self.key.public_key().verify(der, f"{parts[0]}.{parts[1]}".encode(),
                                         ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return None
        if int(claims.get("exp", 0)) < self.clock():
            return None
        aud = claims.get("aud") or []
        if audiences and not set(audiences) & set(aud if isinstance(aud, list) else [aud]):
            return None
        k8s = claims.get("kubernetes.io") or {}
        ns = k8s.get("namespace", "")
        sa = k8s.get("serviceaccount") or {}
        extra: dict[str, list[str]] = {}
        if k8s.get("pod"):
            extra["authentication.kubernetes.io/pod-name"] = [k8s["pod"].get("name", "")]
            extra["authentication.kubernetes.io/pod-uid"] = [k8s["pod"].get("uid", "")]
        return UserInfo(name=claims.get("sub", ""), uid=sa.get("uid", ""),
                        groups=("system:serviceaccounts", f"system:serviceaccounts:{ns}"),
                        extra=extra)

    def discovery(self, path: str, port: int) -> dict[str, Any]:
        if path == "/openid/v1/jwks":
            nums = self.key.public_key().public_numbers()
            return {"keys": [{"use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256",
                              "alg": "ES256", "x": _b64(nums.x.to_bytes(32, "big")),
                              "y": _b64(nums.y.to_bytes(32, "big"))}]}
        return {"issuer": ISSUER, "jwks_uri": f"{ISSUER}/openid/v1/jwks",
                "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"]}
