"""What a container and its engine share: the pipes between them and the holdings table."""
