"""Two nodes find each other by namespace name and exchange a message.

Run this file twice (two terminals, or two machines on one LAN)::

    SCATTERBRAINED_DISCOVERY=loopback python examples/two_nodes.py
"""

from __future__ import annotations

import asyncio

import scatterbrained as sb


async def main() -> None:
    """Join "chat", greet the first peer found, print what it says."""
    async with sb.Node() as node:  # free port, random id, UDP discovery
        async with node.namespace("chat") as ns:
            peers = await ns.wait_for_peers(1, timeout=30)
            other = next(iter(peers))
            await ns.send_to(other, f"hello from {node.id}".encode())
            sender, frames = await ns.recv(timeout=30)
            print(f"{sender.id} says {frames[0].decode()}")


if __name__ == "__main__":
    asyncio.run(main())
