"""Kafka clients built from the configuration (SASL/SSL included), of the client
`kafka.client` names."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from kafka.errors import KafkaConnectionError, KafkaTimeoutError

from consumers.publish import ConfluentProducer, KafkaPythonProducer, Producer
from consumers.receive import METADATA_TIMEOUT_S, ConfluentConsumer, Consumer, KafkaPythonConsumer
from enforcer.config import MAX_REQUEST_BYTES, KafkaConfig
from enforcer.reach import Unreachable

# Heartbeats go out this many times per session timeout, as Kafka recommends.
HEARTBEATS_PER_SESSION = 3
PRODUCER_LINGER_MS = 5
# librdkafka looks for a subscribed topic that does not exist yet only this often (its
# default is five minutes: a worker started before its topic would idle that long).
METADATA_REFRESH_MS = 5000
KAFKA_PYTHON = "kafka-python"
CONFLUENT = "confluent"
# kafka-python's clients ask a broker for the cluster as they are made, for this long at most
# (30 s by default): a worker started before the broker says so, and hears SIGTERM, sooner.
BOOTSTRAP_TIMEOUT_MS = int(METADATA_TIMEOUT_S * 1000)
# Both clients refuse a response over 100 MB by default, and a broker sends a message
# larger than the fetch limits whole, alone (KIP-74): such a message, which a broker that
# allows it delivers, stopped its partition for good. The protocol's own limit (an int32
# size) lets any message the broker holds be read and dead-lettered.
MAX_RESPONSE_BYTES = 2**31 - 1
# Both clients' default: the outbox relay reads its topics back only to resume a round.
OUTBOX_FETCH_WAIT_MS = 500


def security(config: KafkaConfig) -> dict[str, Any]:
    options: dict[str, Any] = {"bootstrap_servers": config.bootstrap_servers.split(","),
                               "security_protocol": config.security_protocol,
                               "client_id": config.client_id,
                               "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS}
    if config.sasl_mechanism:
        options.update(sasl_mechanism=config.sasl_mechanism,
                       sasl_plain_username=config.sasl_username,
                       sasl_plain_password=config.sasl_password)
    if config.ssl_cafile:
        options["ssl_cafile"] = config.ssl_cafile
    return options


def rdkafka_security(config: KafkaConfig) -> dict[str, Any]:
    """The same settings under librdkafka's names."""
    options: dict[str, Any] = {"bootstrap.servers": config.bootstrap_servers,
                               "security.protocol": config.security_protocol,
                               "client.id": config.client_id}
    if config.sasl_mechanism:
        options.update({"sasl.mechanism": config.sasl_mechanism,
                        "sasl.username": config.sasl_username,
                        "sasl.password": config.sasl_password})
    if config.ssl_cafile:
        options["ssl.ca.location"] = config.ssl_cafile
    return options


def attach_consumer(config: KafkaConfig, max_records: int) -> Consumer:
    """The attach topic in the workers' consumer group; offsets committed by the loop."""
    heartbeat_ms = config.session_timeout_ms // HEARTBEATS_PER_SESSION
    if config.client == KAFKA_PYTHON:
        with _bootstrapping(config):
            return KafkaPythonConsumer(dict(
                group_id=config.group_id, enable_auto_commit=False,
                auto_offset_reset="earliest", session_timeout_ms=config.session_timeout_ms,
                heartbeat_interval_ms=heartbeat_ms, max_poll_records=max_records,
                receive_message_max_bytes=MAX_RESPONSE_BYTES, **security(config)),
                (config.attach_topic,))
    return ConfluentConsumer({
        "group.id": config.group_id, "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "session.timeout.ms": config.session_timeout_ms,
        "heartbeat.interval.ms": heartbeat_ms, "receive.message.max.bytes": MAX_RESPONSE_BYTES,
        "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS, **rdkafka_security(config)},
        (config.attach_topic,))


def producer(config: KafkaConfig, give_up_s: float | None = None) -> Producer:
    """With `give_up_s`, librdkafka drops what it could not deliver in that long instead of
    holding it for a later delivery: a message a publication reported unacknowledged is
    then never sent behind the caller's back (kafka-python's producer is renewed after
    such a publication, the old one closed without waiting, which abandons what it held)."""
    # acks=all: a message counts as sent only once every in-sync replica has it.
    if config.client == KAFKA_PYTHON:
        with _bootstrapping(config):
            return KafkaPythonProducer(dict(acks="all", linger_ms=PRODUCER_LINGER_MS,
                                            max_request_size=MAX_REQUEST_BYTES,
                                            **security(config)))
    expiry = {} if give_up_s is None else {"message.timeout.ms": int(give_up_s * 1000)}
    return ConfluentProducer({"acks": "all", "linger.ms": PRODUCER_LINGER_MS,
                              "message.max.bytes": MAX_REQUEST_BYTES, **expiry,
                              **rdkafka_security(config)})


def registry_consumer(config: KafkaConfig) -> Consumer:
    """No group: every worker reads every partition, from positions kept in PostgreSQL."""
    return _reader(config, "registry", config.registry_fetch_wait_ms)


def outbox_reader(config: KafkaConfig) -> Consumer:
    """No group: the outbox relay reads its own topics back after an interrupted round."""
    return _reader(config, "outbox", OUTBOX_FETCH_WAIT_MS)


def _reader(config: KafkaConfig, purpose: str, fetch_wait_ms: int) -> Consumer:
    """`fetch_wait_ms`: the most a fetch waits at the broker for a message."""
    if config.client == KAFKA_PYTHON:
        with _bootstrapping(config):
            return KafkaPythonConsumer(dict(group_id=None, enable_auto_commit=False,
                                            auto_offset_reset="earliest",
                                            fetch_max_wait_ms=fetch_wait_ms,
                                            receive_message_max_bytes=MAX_RESPONSE_BYTES,
                                            **security(config)))
    # librdkafka wants a group id even for assigned partitions; nothing is ever committed.
    return ConfluentConsumer({"group.id": f"{config.group_id}.{purpose}",
                              "enable.auto.commit": False, "auto.offset.reset": "earliest",
                              "fetch.wait.max.ms": fetch_wait_ms,
                              "receive.message.max.bytes": MAX_RESPONSE_BYTES,
                              "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS,
                              **rdkafka_security(config)})


@contextmanager
def _bootstrapping(config: KafkaConfig) -> Iterator[None]:
    """kafka-python asks for the cluster as a client is made: no broker answering is
    Unreachable (librdkafka's clients connect later, and retry by themselves)."""
    try:
        yield
    except (KafkaTimeoutError, KafkaConnectionError) as exc:
        raise Unreachable(f"no broker of {config.bootstrap_servers} answered ({exc})") from exc
