#!/usr/bin/python3
"""confluent-kafka round trip, driven by compat/python_test.go.

usage: python_roundtrip.py BROKERS TOPIC PARTITIONS GROUP VALUES EXTRA OUTDIR

1. produce every line of VALUES (key = line number), idempotent, acks=all;
   write OUTDIR/produced.txt: "partition offset value" per delivery report
2. one group member subscribes, consumes len(VALUES) records, commits
   synchronously and closes; write OUTDIR/consumed.txt and
   OUTDIR/committed.txt ("partition committed low high")
3. produce line i of EXTRA to partition i; a fresh member of the same
   group consumes until it has them all; write OUTDIR/fresh.txt
Go checks the files. Exit status 1 and a message on stderr on any error.
"""
import os
import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition


def die(msg):
    sys.stderr.write("python_roundtrip: %s\n" % msg)
    sys.exit(1)


def produce(brokers, topic, records):
    """records: list of (key, value, partition or None); returns delivery lines."""
    p = Producer({
        "bootstrap.servers": brokers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 60000,
    })
    delivered, errors = [], []

    def cb(err, msg):
        if err is not None:
            errors.append("%s: %s" % (msg.value()[:20], err))
        else:
            delivered.append(b"%d %d %s" % (msg.partition(), msg.offset(), msg.value()))

    for key, value, part in records:
        kw = {"key": key, "value": value, "on_delivery": cb}
        if part is not None:
            kw["partition"] = part
        while True:
            try:
                p.produce(topic, **kw)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(60)
    if left:
        die("%d records not delivered after 60s" % left)
    if errors:
        die("%d delivery errors, first: %s" % (len(errors), errors[0]))
    if len(delivered) != len(records):
        die("%d delivery reports for %d records" % (len(delivered), len(records)))
    return delivered


def consume(brokers, topic, group, want, timeout):
    """Consume as a group member until want records arrived (or a record
    not in want, if want is a set); commit; return lines and the consumer."""
    c = Consumer({
        "bootstrap.servers": brokers,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 500,
    })
    c.subscribe([topic])
    got = []
    deadline = time.time() + timeout
    n = want if isinstance(want, int) else len(want)
    while len(got) < n:
        if time.time() > deadline:
            c.close()
            die("consumed %d of %d records in %ds" % (len(got), n, timeout))
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                continue
            c.close()
            die("consumer error: %s" % m.error())
        got.append(b"%d %d %s" % (m.partition(), m.offset(), m.value()))
        if isinstance(want, set) and m.value() not in want:
            break  # a redelivered record: Go reports it
    c.commit(asynchronous=False)
    return got, c


def main():
    if len(sys.argv) != 8:
        die(__doc__)
    brokers, topic, parts, group, values, extra, outdir = sys.argv[1:]
    parts = int(parts)
    with open(values, "rb") as f:
        vals = f.read().splitlines()
    with open(extra, "rb") as f:
        extras = f.read().splitlines()

    def write(name, lines):
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(b"".join(l + b"\n" for l in lines))

    write("produced.txt", produce(brokers, topic, [(b"%d" % i, v, None) for i, v in enumerate(vals)]))

    got, c = consume(brokers, topic, group, len(vals), 60)
    write("consumed.txt", got)
    tps = [TopicPartition(topic, p) for p in range(parts)]
    committed = c.committed(tps, timeout=10)
    lines = []
    for tp in committed:
        if tp.error:
            die("committed %s: %s" % (tp, tp.error))
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
        lines.append(b"%d %d %d %d" % (tp.partition, tp.offset, lo, hi))
    write("committed.txt", lines)
    c.close()

    if len(extras) != parts:
        die("need one extra value per partition")
    produce(brokers, topic, [(None, v, p) for p, v in enumerate(extras)])
    got, c = consume(brokers, topic, group, set(extras), 40)
    write("fresh.txt", got)
    c.close()
    print("ok")


if __name__ == "__main__":
    main()
