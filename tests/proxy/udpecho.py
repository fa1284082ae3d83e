"""Run inside a test netns: answer each datagram with "<name> <source ip>"."""

import socket
import sys

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[2])))
while True:
    data, addr = s.recvfrom(4096)
    s.sendto(f"{sys.argv[1]} {addr[0]}".encode(), addr)
