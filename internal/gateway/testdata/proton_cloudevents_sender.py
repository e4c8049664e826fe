"""An independent AMQP 1.0 producer of CloudEvents, written with Qpid
Proton, for the AMQP source tests: it sends binary-mode CloudEvents
(attributes as cloudEvents_ application properties, JSON data) to an
address, unsettled, and waits for the broker to accept each.

    proton_cloudevents_sender.py URL ADDRESS FROM COUNT [RATE]

RATE (messages per second, 0 or absent: as fast as the broker accepts)
paces the stream, so that a test can restart something while it flows.

Event i (FROM <= i < FROM+COUNT) has message-id "m-i", id "e-i", the
partition key "k-(i mod 7)" and the data {"seq": i}. Every 50th message
also carries a subject; the last line printed is the number sent.
"""
import json
import sys
import time

from proton import Message
from proton.utils import BlockingConnection


def main():
    url, address, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rate = float(sys.argv[5]) if len(sys.argv) > 5 else 0
    began = time.monotonic()
    conn = BlockingConnection(url, timeout=60, sasl_enabled=True, allowed_mechs="PLAIN")
    try:
        snd = conn.create_sender(address)
        for i in range(first, first + count):
            m = Message(
                id="m-%d" % i,
                durable=True,
                content_type="application/json",
                body=json.dumps({"seq": i}).encode(),
                properties={
                    "cloudEvents_specversion": "1.0",
                    "cloudEvents_id": "e-%d" % i,
                    "cloudEvents_source": "/proton/test",
                    "cloudEvents_type": "com.example.reading",
                    "cloudEvents_partitionkey": "k-%d" % (i % 7),
                    "site": "plant",
                },
            )
            if i % 50 == 0:
                m.subject = "checkpoint"
            snd.send(m, timeout=60)
            if rate > 0:
                ahead = (i - first + 1) / rate - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)
        print(count)
    finally:
        conn.close()


if __name__ == "__main__":
    main()
