"""The traffic lab: real labelled traffic from real tools in network namespaces.

``multa lab run`` builds a small isolated network (namespaces joined by veth
pairs to a bridge, no route out, addresses only in 10.77.0.0/16), starts real
services from Debian packages, drives real clients and attack tools against
them, captures with tcpdump and labels every flow by the scenario's rules.

Modules: :mod:`.network` (namespaces, links, shaping), :mod:`.procs` (processes
by PID, timeouts), :mod:`.labels` (rules -> labels.jsonl), :mod:`.scenario`
(the scenario context and registry), :mod:`.benign`, :mod:`.tunnels`,
:mod:`.threats` (the scenarios; :mod:`.quic` with its aioquic glue :mod:`.quicapp`, and
:mod:`.othertunnels` add QUIC and non-VPN tunnels; :mod:`.tor` and :mod:`.p2p` a private Tor network and
BitTorrent swarms, on extra addresses from :mod:`.addrs`; the broader lab adds :mod:`.benign_wide`, :mod:`.scans`,
:mod:`.floods` (random-source floods sent by :mod:`.rawflood`), :mod:`.bruteforce`, with servers in
:mod:`.servers` and :mod:`.mailservers`), :mod:`.runner` (one run, its manifest),
:mod:`.tools` (what is installed), :mod:`.packages` (what to install).
"""

#: Prefix of every namespace the lab creates; `multa lab clean` removes these.
NS_PREFIX = "mlab-"
