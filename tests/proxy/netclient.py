"""Run inside a test netns: many requests, one line of JSON with the results.

    netclient.py http URL COUNT        -> ["<body>" | "refused" | "timeout" | "error:..."]
    netclient.py udp IP PORT COUNT SPORT
"""

from __future__ import annotations

import json
import socket
import sys
import urllib.parse


def http(url: str, count: int) -> list[str]:
    u = urllib.parse.urlsplit(url)
    out = []
    for _ in range(count):
        s = socket.socket()
        s.settimeout(1.5)
        try:
            s.connect((u.hostname or "", u.port or 80))
            s.sendall(f"GET {u.path or '/'} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            out.append(data.replace(b"\r\n", b"\n").split(b"\n\n", 1)[-1].decode().strip())
        except ConnectionRefusedError:
            out.append("refused")
        except TimeoutError:
            out.append("timeout")
        except OSError as err:
            out.append(f"error:{err}")
        finally:
            s.close()
    return out


def udp(ip: str, port: int, count: int, sport: int) -> list[str]:
    out = []
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", sport))
    s.settimeout(1.0)
    for i in range(count):
        try:
            s.sendto(f"ping {i}".encode(), (ip, port))
            out.append(s.recv(4096).decode().strip())
        except TimeoutError:
            out.append("timeout")
        except OSError as err:
            out.append(f"error:{err}")
    return out


if __name__ == "__main__":
    if sys.argv[1] == "http":
        print(json.dumps(http(sys.argv[2], int(sys.argv[3]))))
    else:
        print(json.dumps(udp(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                             int(sys.argv[5]))))
