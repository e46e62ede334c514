"""The engine daemon's process: the control plane, the app registry, the HTTP gateway."""
