#!/usr/bin/env python3
"""A WAN stand-in for scripts/bench: relays TCP from 127.0.0.1:LISTEN to 127.0.0.1:TARGET
and holds every client-to-upstream read for DELAY_MS before forwarding it, so each HTTP
request (one read on a keep-alive connection) reaches the upstream that much later.
Answers flow back undelayed. Usage: delay_relay.py LISTEN TARGET [DELAY_MS=50]"""
import asyncio
import sys


async def pipe(reader, writer, delay):
    try:
        while True:
            data = await reader.read(256 * 1024)
            if not data:
                break
            if delay:
                await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main(listen, target, delay):
    async def handle(creader, cwriter):
        try:
            ureader, uwriter = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            cwriter.close()
            return
        await asyncio.gather(pipe(creader, uwriter, delay), pipe(ureader, cwriter, 0))

    server = await asyncio.start_server(handle, "127.0.0.1", listen, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main(int(args[0]), int(args[1]), (float(args[2]) if len(args) > 2 else 50.0) / 1000))
