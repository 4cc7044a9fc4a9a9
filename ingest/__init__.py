"""The cloud side of the spine: MQTT consumers that store every sample exactly once, the schema they
store into (TimescaleDB when present, native PostgreSQL partitioning otherwise), and device
provisioning for the broker."""
