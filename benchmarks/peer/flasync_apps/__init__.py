"""fl-async ServerApp/ClientApp used by the benchmarks: the same workloads as ``flower_apps``, written the
fl-async way (async handlers, waiting on the link instead of sleeping). Configured by ``BENCH_*`` variables."""
