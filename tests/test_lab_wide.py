"""The broader lab without root: scenario names and families, labels of the new threats, path conditions,
spoofed flood sources, brute-force wordlists and the set-up script's packages."""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

from multa_broker.lab import bruteforce, floods, runner
from multa_broker.lab.network import HOSTS, LAB_NET, MSS_CLAMPS, MTUS, Conditions
from multa_broker.lab.scenario import REGISTRY, Context
from multa_broker.lab.threats import SCAN

REPO = Path(__file__).resolve().parent.parent

NEW_BENIGN = {"postgres", "mariadb", "smb", "telnet", "vnc", "snmp", "syslog", "imap", "pop3", "apache", "lighttpd",
              "unbound", "bind", "dhcp", "ntp", "sip", "postfix"}
NEW_THREATS = {"scan-fin", "scan-xmas", "scan-null", "scan-ack", "scan-slow", "scan-masscan", "dos-udpflood",
               "dos-icmpflood", "dos-synspoof", "dos-randsrc", "dos-httpflood", "bf-postgres", "bf-mysql", "bf-redis", "bf-imap",
               "bf-pop3", "bf-telnet", "bf-vnc", "bf-snmp", "bf-smb", "scan-sip", "bf-sip", "bf-smtp"}


def test_new_scenarios_are_registered_with_their_family():
    assert NEW_BENIGN | NEW_THREATS <= set(REGISTRY)
    for name in NEW_BENIGN:
        assert REGISTRY[name].kind == "benign" and "-" not in name
    for name in NEW_THREATS:
        family = name.split("-", 1)[0]
        assert REGISTRY[name].kind == "threat" and family in {"scan", "dos", "bf"}, name


def test_threat_labels_follow_the_conventions():
    # Packet scans and floods carry no service; brute force keeps the attacked service.
    assert SCAN.service is None and floods.FLOOD.service is None and floods.FLOOD.threat == "dos"
    assert floods.HTTP_DOS.as_dict() == {"service": "http", "encrypted": "cleartext", "tunnel": "none", "threat": "dos"}
    assert {lab.service for lab in (bruteforce.BF_DB, bruteforce.BF_MAIL, bruteforce.BF_REMOTE,
                                    bruteforce.BF_NETMGMT, bruteforce.BF_WINDOWS, bruteforce.BF_VOIP)} == \
        {"database", "mail", "remote", "netmgmt", "windows", "voip"}
    assert all(lab.threat == "bruteforce" for lab in (bruteforce.BF_DB, bruteforce.BF_REMOTE))


def test_conditions_stay_in_range_and_are_seeded():
    seen_mtu, seen_mss = set(), set()
    for seed in range(300):
        c = Conditions.draw(random.Random(seed))
        assert c.mtu == 1500 or c.mtu in MTUS
        assert 1280 <= c.mtu <= 9000
        if c.mss is not None:
            assert c.mss in MSS_CLAMPS and c.mss <= c.mtu - 40
        seen_mtu.add(c.mtu)
        seen_mss.add(c.mss)
        assert Conditions.draw(random.Random(seed)) == c
    assert {1500, 1280, 9000} <= seen_mtu and None in seen_mss and len(seen_mss) > 3
    assert all(Conditions.draw(random.Random(s), mss_possible=False).mss is None for s in range(50))


def test_ci_runs_and_tunnels_keep_the_standard_path():
    # The CI lab checks frames against 1500 bytes; tunnels set inner MTUs for a 1500-byte path.
    for seed in range(1, 30):
        assert runner.conditions("http", seed, 0.25) == Conditions()
        w = runner.conditions("wireguard", seed, 1.0)
        assert (w.mtu, w.mss) == (1500, None)
    drawn = {runner.conditions("http", seed, 1.0) for seed in range(1, 30)}
    assert len(drawn) > 3
    # Drawn from their own RNG: the scenario's seeded choices do not move.
    assert runner.conditions("smb", 2, 1.0) == runner.conditions("smb", 2, 1.0)


def _ctx(tmp_path: Path, seed: int) -> Context:
    return Context("t", None, None, random.Random(seed), tmp_path)  # type: ignore[arg-type]


def test_spoofed_flood_sources_are_unused_lab_addresses(tmp_path):
    used = {ip for ip, extra in HOSTS.values()} | {a for _, extra in HOSTS.values() for a in extra}
    for seed in range(100):
        for addr in floods._spoofed(_ctx(tmp_path, seed), 3, 8):
            assert ipaddress.ip_address(addr) in LAB_NET and addr not in used


def test_bruteforce_wordlists_hold_the_password_in_some_runs(tmp_path):
    acct = bruteforce.Account("app", "sunshine42")
    hits = 0
    for seed in range(40):
        opts = bruteforce._lists(_ctx(tmp_path, seed), acct, ["root", "admin"], bruteforce.PASSWORDS)
        assert opts[0] == "-L" and opts[2] == "-P"
        hits += "sunshine42" in Path(opts[3]).read_text().split()
    assert 5 < hits < 35
    only_pw = bruteforce._lists(_ctx(tmp_path, 1), acct, None, bruteforce.PASSWORDS)
    assert only_pw[0] == "-P" and len(only_pw) == 2


def test_setup_script_installs_the_new_servers_and_tools():
    text = (REPO / "scripts" / "lab-setup.sh").read_text()
    for pkg in ("postgresql", "mariadb-server", "samba", "smbclient", "inetutils-telnetd", "tigervnc-standalone-server",
                "vncsnapshot", "snmpd", "rsyslog", "dovecot-imapd", "dovecot-pop3d", "apache2", "apache2-utils",
                "lighttpd", "unbound", "bind9", "masscan", "wrk", "iptables", "busybox", "ntpsec-ntpdate", "kamailio",
                "sipsak", "sipvicious", "postfix"):
        assert f" {pkg} " in text.replace("\n", " ") or f" {pkg}\"" in text, pkg
    assert "chrony" not in text.split("ALL_PACKAGES=")[1].split('"')[1]  # unpacked, never installed
