"""The embedded local stack: a real Kafka broker and redis-server, started by `fraudctl up`."""
