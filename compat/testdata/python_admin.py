#!/usr/bin/python3
"""confluent-kafka AdminClient round trip, driven by compat/python_test.go.

usage: python_admin.py BROKERS TOPIC

create TOPIC (3 partitions, RF 3, retention.ms=3600000), check that creating
it again fails with TOPIC_ALREADY_EXISTS, list it (Metadata), describe its
configs, write 50 records, delete it, check it is gone and that deleting it
again fails with UNKNOWN_TOPIC_OR_PART, recreate it and check it is empty.
Prints "ok"; exit status 1 and a message on stderr on any error.
"""
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

PARTS, RF, RETENTION = 3, 3, "3600000"


def die(msg):
    sys.stderr.write("python_admin: %s\n" % msg)
    sys.exit(1)


def wait(what, cond, timeout=20):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            if cond():
                return
        except KafkaException as e:
            last = e
        time.sleep(0.1)
    die("timed out waiting for %s (last error: %s)" % (what, last))


def error_code(fut):
    try:
        fut.result(timeout=20)
        return None
    except KafkaException as e:
        return e.args[0].code()


def main():
    if len(sys.argv) != 3:
        die(__doc__)
    brokers, topic = sys.argv[1:]
    adm = AdminClient({"bootstrap.servers": brokers})

    def create():
        def attempt():
            fut = adm.create_topics([NewTopic(topic, PARTS, RF, config={"retention.ms": RETENTION})],
                                    operation_timeout=15)[topic]
            code = error_code(fut)
            if code is not None:
                sys.stderr.write("create_topics: %s (retrying)\n" % KafkaError(code))
            return code is None
        wait("create_topics to succeed", attempt)

    def led():
        md = adm.list_topics(topic=topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None or len(md.partitions) != PARTS:
            return False
        return all(p.leader > 0 and len(p.replicas) == RF for p in md.partitions.values())

    create()
    code = error_code(adm.create_topics([NewTopic(topic, PARTS, RF)])[topic])
    if code != KafkaError.TOPIC_ALREADY_EXISTS:
        die("creating %s again: got %s, want TOPIC_ALREADY_EXISTS" % (topic, code and KafkaError(code)))
    wait("the topic to be listed with %d led partitions" % PARTS, led)
    if topic not in adm.list_topics(timeout=10).topics:
        die("%s missing from the full topic list" % topic)

    res = ConfigResource("topic", topic)
    configs = adm.describe_configs([res])[res].result(timeout=20)
    ret = configs.get("retention.ms")
    if ret is None or ret.value != RETENTION or ret.is_default:
        die("retention.ms described as %r" % ret)
    pol = configs.get("cleanup.policy")
    if pol is None or pol.value != "delete":
        die("cleanup.policy described as %r" % pol)

    p = Producer({"bootstrap.servers": brokers, "enable.idempotence": True, "acks": "all"})
    errors = []
    for i in range(50):
        p.produce(topic, value=b"py-admin-%d" % i, on_delivery=lambda err, msg: err and errors.append(err))
    if p.flush(30) or errors:
        die("producing to %s: %s" % (topic, errors[:1] or "not flushed"))

    fut = adm.delete_topics([topic], operation_timeout=15)[topic]
    code = error_code(fut)
    if code is not None:
        die("delete_topics: %s" % KafkaError(code))
    wait("the topic to disappear", lambda: topic not in adm.list_topics(timeout=10).topics)
    code = error_code(adm.delete_topics([topic])[topic])
    if code != KafkaError.UNKNOWN_TOPIC_OR_PART:
        die("deleting %s again: got %s, want UNKNOWN_TOPIC_OR_PART" % (topic, code and KafkaError(code)))

    create()
    wait("the recreated topic to be led", led)
    c = Consumer({"bootstrap.servers": brokers, "group.id": "python-admin-check"})
    marks = {}

    def empty():
        for part in range(PARTS):
            marks[part] = c.get_watermark_offsets(TopicPartition(topic, part), timeout=5)
        return True
    wait("watermarks of the recreated topic", empty)
    c.close()
    for part, (lo, hi) in marks.items():
        if (lo, hi) != (0, 0):
            die("recreated %s/%d has offsets %d..%d, want empty" % (topic, part, lo, hi))
    print("ok")


if __name__ == "__main__":
    main()
