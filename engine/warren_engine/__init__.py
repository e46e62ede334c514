"""Warren's server side: the engine daemon, container pools, the container runtime, the CLI."""
