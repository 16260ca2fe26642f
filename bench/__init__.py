"""Benchmarks: FakeDify's own rate, the project beside two asyncio peers (issue 17's a/b/c/d),
throughput against the physical bound, client CPU per row, memory in table size, the baselines
users would pick instead, and the shared pool across processes.

Run ``make bench`` (or ``.venv/bin/python -m bench --help``). FakeDify runs in the bench's own
process; every client under test runs in a separate worker process (``bench.worker`` or a
peer's own module), so the server's CPU and memory are never counted as the client's.
"""
