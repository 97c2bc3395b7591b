"""Extra lab addresses a scenario adds to a host for its own run (Tor relays, BitTorrent peers).

The lab network gives each host one or a few addresses (:mod:`.network`); a scenario that needs
more nodes than hosts adds addresses to a host's ``eth0`` for its run and removes them after it
(a clean-up of the context), so the next scenario finds the network as it was. Every address is
checked to be inside the lab network and outside the ranges other scenarios use (spoofed flood
sources are 10.77.0.100-250).
"""

from __future__ import annotations

import ipaddress

from multa_broker.lab.network import HOSTS, LAN
from multa_broker.lab.scenario import Context, ScenarioError

#: Addresses scenarios may add: 10.77.0.21-99, never a host's own address.
EXTRA_RANGE = range(21, 100)


def fixed_addresses() -> set[str]:
    return {a for ip, extra in HOSTS.values() for a in (ip, *extra)}


def add_address(ctx: Context, role: str, addr: str) -> str:
    """Add ``addr`` to ``role``'s eth0 for this scenario; it is removed when the scenario ends."""
    ip = ipaddress.ip_address(ctx.target(addr))
    if ip not in LAN or int(ip) - int(LAN.network_address) not in EXTRA_RANGE or addr in fixed_addresses():
        raise ScenarioError(f"{addr} is not a free extra lab address (10.77.0.21-99)")
    ctx.client(role, ["ip", "addr", "replace", f"{addr}/{LAN.prefixlen}", "dev", "eth0"], timeout=10, ok=True)
    ctx.cleanups.append(lambda: ctx.procs.run(ctx.net.hosts[role].ns,
                                              ["ip", "addr", "del", f"{addr}/{LAN.prefixlen}", "dev", "eth0"],
                                              timeout=10))
    return addr
