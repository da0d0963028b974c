"""
Benchmark harness for Nucleus Stream's hot path: one room broadcast, many sockets.

``python -m bench`` builds the C load generator (``loadgen.c``), starts each
server under test alone on one core, drives it from the other core, and
reports fan-out throughput, latency, CPU per delivery, memory per idle
connection and handshake rate, next to the load generator's own CPU share.
See ``bench/README.md`` for the method and its caveats.
"""
