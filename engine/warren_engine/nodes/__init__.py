"""Several engine nodes: a primary that places pools, and agents that run them.

Step 11 replaces this with peers on a RabbitMQ cluster; until then it lives here, apart.
"""
