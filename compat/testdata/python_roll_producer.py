#!/usr/bin/python3
"""confluent-kafka (librdkafka) producer for a rolling restart, driven by
compat/roll_librdkafka_test.go.

usage: python_roll_producer.py BROKERS TOPIC PARTITIONS RATE OUT [KEY=VALUE ...]

Produces records round-robin over the partitions at RATE records/s,
acks=all and enable.idempotence=true, until standard input is closed, then
flushes. Prints "acked N errors M" about every 200 ms on stdout, and at the
end writes OUT: "ok PARTITION OFFSET UNIX_NS VALUE" per delivery report
(the time it arrived) and "err VALUE ERROR" per failed one. KEY=VALUE
pairs are more librdkafka settings (debug=broker,topic,msg logs to stderr).
"""
import sys
import threading
import time

from confluent_kafka import Producer


def main():
    if len(sys.argv) < 6:
        sys.stderr.write(__doc__)
        sys.exit(2)
    brokers, topic, parts, rate, out = sys.argv[1:6]
    parts, rate = int(parts), int(rate)
    conf = {
        "bootstrap.servers": brokers,
        "acks": "all",
        "enable.idempotence": True,
    }
    for kv in sys.argv[6:]:
        k, _, v = kv.partition("=")
        conf[k] = v
    p = Producer(conf)
    reports = []
    failed = [0]

    def on_delivery(err, msg):
        now = time.time_ns()
        if err is not None:
            failed[0] += 1
            reports.append(b"err %s %s" % (msg.value(), str(err).replace("\n", " ").encode()))
        else:
            reports.append(b"ok %d %d %d %s" % (msg.partition(), msg.offset(), now, msg.value()))

    stop = threading.Event()

    def watch_stdin():
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    interval = 1.0 / rate
    nxt = time.monotonic()
    last_progress = 0.0
    i = 0
    while not stop.is_set():
        now = time.monotonic()
        if now < nxt:
            p.poll(nxt - now)
            continue
        nxt += interval
        value = b"rdk-%d-%s" % (i, b"r" * 100)
        while True:
            try:
                p.produce(topic, value=value, partition=i % parts, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.01)
        i += 1
        p.poll(0)
        if now - last_progress >= 0.2:
            last_progress = now
            print("acked %d errors %d" % (len(reports) - failed[0], failed[0]), flush=True)
    left = p.flush(60)
    with open(out, "wb") as f:
        f.write(b"".join(r + b"\n" for r in reports))
    print("sent %d left %d" % (i, left), flush=True)
    sys.exit(1 if left else 0)


if __name__ == "__main__":
    main()
