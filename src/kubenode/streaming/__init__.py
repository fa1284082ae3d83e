"""Streaming for exec, attach and port-forward: SPDY/3.1 and WebSocket channel
protocols (server and client sides), generic over `runner.StreamingRuntime`."""
