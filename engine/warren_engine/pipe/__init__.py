"""What a container and its engine share: the pipes, their messages, the holdings table."""
