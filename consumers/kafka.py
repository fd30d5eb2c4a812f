"""kafka-python clients built from the configuration (SASL/SSL included)."""

from __future__ import annotations

from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from enforcer.config import KafkaConfig

# Heartbeats go out this many times per session timeout, as Kafka recommends.
HEARTBEATS_PER_SESSION = 3
PRODUCER_LINGER_MS = 5


def security(config: KafkaConfig) -> dict[str, Any]:
    options: dict[str, Any] = {"bootstrap_servers": config.bootstrap_servers.split(","),
                               "security_protocol": config.security_protocol,
                               "client_id": config.client_id}
    if config.sasl_mechanism:
        options.update(sasl_mechanism=config.sasl_mechanism,
                       sasl_plain_username=config.sasl_username,
                       sasl_plain_password=config.sasl_password)
    if config.ssl_cafile:
        options["ssl_cafile"] = config.ssl_cafile
    return options


def attach_consumer(config: KafkaConfig, max_records: int) -> KafkaConsumer:
    return KafkaConsumer(
        config.attach_topic, group_id=config.group_id, enable_auto_commit=False,
        auto_offset_reset="earliest", session_timeout_ms=config.session_timeout_ms,
        heartbeat_interval_ms=config.session_timeout_ms // HEARTBEATS_PER_SESSION,
        max_poll_records=max_records, **security(config))


def producer(config: KafkaConfig) -> KafkaProducer:
    # acks=all: a message counts as sent only once every in-sync replica has it.
    return KafkaProducer(acks="all", linger_ms=PRODUCER_LINGER_MS, **security(config))


def registry_consumer(config: KafkaConfig) -> KafkaConsumer:
    """No group: every worker reads every partition, from positions kept in PostgreSQL."""
    return KafkaConsumer(group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", **security(config))
