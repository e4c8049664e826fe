#!/usr/bin/env python3
"""A consumer group member written with confluent-kafka (librdkafka), an
independent Kafka client for the lab's tests.

It joins GROUP on BROKER, reads TOPIC (read_committed) until it has read MAX
records (0: no limit) or nothing new arrived for IDLE seconds, commits the
offsets after the last record it handed out on each partition (synchronously),
leaves the group, and prints one line per record: partition, offset and value,
tab-separated. Records fetched beyond MAX are neither printed nor committed.
"""
import argparse
import sys
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--max", type=int, default=0)
    ap.add_argument("--idle", type=float, default=5.0)
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args()

    c = Consumer({
        "bootstrap.servers": a.broker,
        "group.id": a.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "session.timeout.ms": 10000,
    })
    c.subscribe([a.topic])
    read, last = 0, {}
    began = last_new = time.monotonic()
    out = []
    try:
        while True:
            now = time.monotonic()
            if a.max and read >= a.max:
                break
            if now - began > a.timeout:
                print("group_consumer: timed out after %.0f s with %d records" % (a.timeout, read), file=sys.stderr)
                break
            # Idle only counts once the group has given us partitions.
            if c.assignment() and now - last_new > a.idle:
                break
            msg = c.poll(0.2)
            if msg is None:
                if not c.assignment():
                    last_new = time.monotonic()
                continue
            if msg.error():
                raise KafkaException(msg.error())
            last_new = time.monotonic()
            read += 1
            last[msg.partition()] = msg.offset()
            out.append("%d\t%d\t%s" % (msg.partition(), msg.offset(), msg.value().decode()))
        if last:
            c.commit(offsets=[TopicPartition(a.topic, p, o + 1) for p, o in sorted(last.items())], asynchronous=False)
    finally:
        c.close()
    sys.stdout.write("".join(line + "\n" for line in out))


if __name__ == "__main__":
    main()
