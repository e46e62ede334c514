"""Container pools, in the engine's process: autoscaler, processes, crash ledger, placement."""
