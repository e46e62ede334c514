"""Everything that runs in a container: the forked process that runs a function's inputs."""
