"""Performance tools: timing, kernel paths, the cost model, benchmarks, traces, τ policies, fault injection."""
