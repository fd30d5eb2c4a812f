"""The embedded services (a Kafka-compatible broker and PostgreSQL on loopback) and what
runs on them for a newcomer: the demo, its tour and the synthetic country."""
