"""The original Async Nexus (1.0.2, from PyPI) as a ZeroMQ peer of the Rust tests.

    zmq_peer.py send PORT N      push N events to tcp://127.0.0.1:PORT with async_nexus.zmq.send_event
    zmq_peer.py receive N        bind a PULL socket on a random port, print it, then receive N events
                                 into an AsyncEventNexus through async_nexus.zmq.ZmqEventReceiver and
                                 print each as a JSON line

Event i (from 0) is built by `event(i)`, the same rule as the Rust side's.
"""

import asyncio
import dataclasses
import json
import sys

import zmq
import zmq.asyncio

import async_nexus
import async_nexus.zmq


def event(i: int) -> async_nexus.Event:
    event_type = "named.type" if i % 5 == 0 else 100 + i % 7
    priority = i % 3 - 1
    kind = i % 4
    if kind == 0:
        payload = f"text {i} caf\u00e9 \u2713"
    elif kind == 1:
        payload = i * 1000
    elif kind == 2:
        payload = {"n": i, "list": [1, 2.5, "x"], "nested": {"ok": True}}
    else:
        payload = None
    return async_nexus.Event(i + 1, event_type, priority, payload)


def send(port: int, n: int) -> None:
    context = zmq.Context()
    socket = context.socket(zmq.PUSH)
    socket.connect(f"tcp://127.0.0.1:{port}")
    for i in range(n):
        async_nexus.zmq.send_event(event(i), socket)
    socket.close(linger=10_000)  # wait until everything is delivered
    context.term()


async def receive(n: int) -> None:
    context = zmq.asyncio.Context()
    socket = context.socket(zmq.PULL)
    port = socket.bind_to_random_port("tcp://127.0.0.1")
    print(port, flush=True)

    received = []
    done = asyncio.Event()

    async def record(e: async_nexus.Event, queue: asyncio.Queue) -> None:
        received.append(e)
        if len(received) == n:
            done.set()

    nexus = async_nexus.AsyncEventNexus()
    nexus.add_handler(-1, record)
    nexus.register(async_nexus.zmq.ZmqEventReceiver(socket))
    nexus.start()
    await asyncio.wait_for(done.wait(), timeout=60)
    for e in received:
        print(json.dumps(dataclasses.asdict(e)), flush=True)
    nexus.stop()
    socket.close(linger=0)


if __name__ == "__main__":
    if sys.argv[1] == "send":
        send(int(sys.argv[2]), int(sys.argv[3]))
    else:
        asyncio.run(receive(int(sys.argv[2])))
