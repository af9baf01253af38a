#!/usr/bin/python3
"""confluent-kafka over SASL_SSL with SCRAM-SHA-512, driven by compat/sasl_python_test.go.

usage: python_sasl.py ok BROKERS CAFILE USER PASSWORD TOPIC N GROUP
       python_sasl.py refused BROKERS CAFILE USER PASSWORD

ok: create TOPIC (3 partitions) with the admin client, produce N values,
    consume them all in GROUP and commit; print "ok".
refused: list topics and print the error the client reports (exit 0 if
    one was reported, 1 if the listing worked).
"""
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def conf(brokers, ca, user, password):
    return {
        "bootstrap.servers": brokers,
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": password,
        "ssl.ca.location": ca,
    }


def die(msg):
    sys.stderr.write("python_sasl: %s\n" % msg)
    sys.exit(1)


def ok(base, topic, n, group):
    adm = AdminClient(base)
    for _, f in adm.create_topics([NewTopic(topic, 3, 3)]).items():
        f.result(30)
    p = Producer(dict(base, acks="all", **{"enable.idempotence": True}))
    errors = []
    for i in range(n):
        p.produce(topic, ("py-%d" % i).encode(), callback=lambda err, msg: err and errors.append(str(err)))
    p.flush(60)
    if errors:
        die("produce: %s" % errors[:3])
    c = Consumer(dict(base, **{"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False}))
    c.subscribe([topic])
    seen = set()
    deadline = time.time() + 60
    while len(seen) < n and time.time() < deadline:
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            die("consume: %s" % m.error())
        seen.add(m.value())
    if len(seen) != n:
        die("consumed %d of %d" % (len(seen), n))
    c.commit(asynchronous=False)
    c.close()
    print("ok")


def refused(base):
    errs = []
    base = dict(base, error_cb=lambda e: errs.append(str(e)))
    adm = AdminClient(base)
    try:
        adm.list_topics(timeout=5)
    except KafkaException as e:
        adm.poll(1)  # serves error_cb, which carries the cause
        errs.append(str(e))
        print("\n".join(errs))
        return
    die("listing topics worked")


def main():
    mode, brokers, ca, user, password = sys.argv[1:6]
    base = conf(brokers, ca, user, password)
    if mode == "ok":
        ok(base, sys.argv[6], int(sys.argv[7]), sys.argv[8])
    else:
        refused(base)


if __name__ == "__main__":
    main()
