"""WebSocket channel protocols of Kubernetes streaming (upstream:
k8s.io/apimachinery/pkg/util/httpstream/wsstream).

Every message carries one channel: binary protocols (`channel.k8s.io`,
`v4.channel.k8s.io`, `v5.channel.k8s.io`) put the channel number in the first byte;
base64 protocols (`base64.channel.k8s.io`, `v4.base64.channel.k8s.io`) send text whose
first character is the ASCII digit of the channel and the rest base64. Remote command
channels: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize; `v5` adds 255, the close
signal ([255, channel]: the sender will write no more on that channel). Port-forward
uses channel pairs (2i data, 2i+1 error) per requested port, each starting with the
port number as 2 little-endian bytes."""

from __future__ import annotations

import base64
from collections.abc import Sequence

STDIN = 0
STDOUT = 1
STDERR = 2
ERROR = 3
RESIZE = 4
CLOSE = 255

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V4_BASE64 = "v4.base64.channel.k8s.io"
V1 = "channel.k8s.io"
V1_BASE64 = "base64.channel.k8s.io"
PORT_FORWARD = "portforward.k8s.io"

REMOTE_COMMAND_PROTOCOLS = (V5, V4, V4_BASE64, V1_BASE64, V1)
PORT_FORWARD_PROTOCOLS = (PORT_FORWARD, V4, V4_BASE64, V1, V1_BASE64)


def is_base64(protocol: str) -> bool:
    return "base64" in protocol


def encode(protocol: str, channel: int, data: bytes) -> bytes | str:
    if is_base64(protocol):
        return str(channel) + base64.b64encode(data).decode()
    return bytes([channel]) + data


def decode(protocol: str, message: bytes | str) -> tuple[int, bytes]:
    """Split a message into (channel, payload); ValueError if malformed."""
    if isinstance(message, str):
        if not message or not message[0].isdigit():
            raise ValueError("empty or malformed base64 channel message")
        return int(message[0]), base64.b64decode(message[1:])
    if not message:
        raise ValueError("empty channel message")
    return message[0], bytes(message[1:])


def offered_protocols(header: str | None) -> list[str]:
    return [p.strip() for p in (header or "").split(",") if p.strip()]


def negotiate(offered: Sequence[str], supported: Sequence[str]) -> str | None:
    """The first protocol the client offered that we support; "" when it offered none
    (the legacy default); None when nothing matches."""
    if not offered:
        return ""
    for p in offered:
        if p in supported:
            return p
    return None
