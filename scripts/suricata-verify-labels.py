#!/usr/bin/env python3
"""Write multa_broker/dataset/labels/suricata-verify.yaml from suricata-verify's test folders.

    .venv/bin/python scripts/suricata-verify-labels.py SURICATA_VERIFY_DIR [--out YAML]

SURICATA_VERIFY_DIR holds ``tests/<test>/`` with each test's captures,
``test.yaml`` and ``*.rules``. Each test gets a threat decision with its reason:

* a hand-checked attack (ATTACKS below: the flows, class and why);
* ``benign`` when the name starts with a protocol family (PROTOCOL_PREFIXES:
  a protocol parser case), the name has none of the CAUTION keywords
  (evasion, gap, invalid, flood, ...) and its rules and test.yaml none of the
  ATTACK_WORDS; the reason names the prefix;
* otherwise missing, with the keyword or "no protocol prefix" as reason.

Conservative on purpose: a wrong label is worse than a missing one. Service,
encrypted and tunnel come from nDPI (the YAML's ``type: ndpi``), not from here.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "multa_broker/dataset/labels/suricata-verify.yaml"

#: Test-name prefixes that name the protocol whose parser the test exercises.
PROTOCOL_PREFIXES = (
    "bittorrent-", "dcerpc-", "dhcp-", "dns-", "enip-", "ftp-", "http-", "http1-", "http2-",
    "ikev1-", "ikev2-", "imap-", "irc", "ja4-", "krb5-", "ldap-", "modbus", "mqtt-", "mqtt31-",
    "mqtt311-", "mqtt5-", "nfs3-", "nfs4-", "ntp-", "pgsql-", "pop3", "rdp-", "rfb-", "sip-",
    "smb-", "smb1-", "smb2-", "smb3-", "smtp-", "snmp-", "ssh-", "tftp-", "tls-", "quic-", "websocket",
)
#: Name keywords that make a test something other than a normal exchange
#: (crafted, broken, evasive or attack traffic): threat stays missing.
CAUTION = (
    "evasion", "fuzz", "gap", "invalid", "bad", "trunc", "overlap", "anomaly", "flood", "malformed",
    "junk", "bug", "issue", "security", "cve", "exploit", "uaf", "bypass", "crash", "overflow",
    "limit", "memcap", "excessive", "error", "unsolicited", "reject", "fail", "too-", "corrupt",
    "drop", "ips", "frag", "reversed", "unrecognized", "mismatch", "long", "wrong", "incomplete",
    "missing", "duplicate", "inject", "recursion", "eicar", "kerberoast", "probing", "weak",
    "testmyids", "not09", "events", "unintroduced", "unassigned", "z-flag", "midstream", "async",
    "filestore", "data-after", "abandon", "noint", "bailout", "retry", "multiple-cl", "no-helo", "spaces",
)
#: A 4-digit number in a name is a Suricata ticket: a regression case for a bug.
TICKET = re.compile(r"(^|-)\d{4}(-|$)")
#: Words in a test's rules or test.yaml that suggest an attack sample.
ATTACK_WORDS = re.compile(
    r"trojan|malware|cnc|exploit|shellcode|web-application-attack|attempted-admin|"
    r"attempted-user|misc-attack|successful-admin|backdoor|ransom|worm|scan|brute|\bdos\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Attack:
    match: str  # YAML flow mapping of the attack flows
    labels: str  # YAML flow mapping of labels
    reason: str


#: Attack tests checked by hand (rules, captures read with `multa flows`).
ATTACKS: dict[str, Attack] = {
    "bug-5437-01": Attack(
        "{proto: tcp, orig_h: 183.171.100.129, resp_p: 80}", "{threat: exploit}",
        "Mirai spreading: HTTP GET /shell?cd+/tmp;rm+-rf+*;wget+... against JAWS web servers "
        "(rule 'ET MALWARE JAWS Webserver Unauthenticated Shell Command Execution')"),
    "bug-5437-02": Attack(
        "{proto: tcp, orig_h: 41.108.52.138, resp_p: 80}", "{threat: exploit}",
        "Mirai spreading: the JAWS shell-command exploit from 41.108.52.138 to port 80 of "
        "several hosts (same rules as bug-5437-01)"),
    "detect-bidir-flowbits": Attack(
        "{proto: tcp}", "{threat: exploit}",
        "Selenium Server 3.141.59 remote code execution, request and answer in one flow "
        "(rules 'ET EXPLOIT Selenium Server ... Remote Code Execution')"),
    "output-multi-eve": Attack(
        "{proto: tcp, orig_h: 172.16.238.10, resp_h: 172.16.238.11, resp_p: 80}", "{threat: exploit}",
        "Log4Shell attempt: ${jndi:...} in HTTP to 172.16.238.11:80 "
        "(rule 'ET EXPLOIT Apache log4j RCE Attempt (CVE-2021-44228)'); the callback flows stay unlabelled"),
    "http-encoding-gzip-uncompressed": Attack(
        "{proto: tcp, orig_h: 192.168.86.18, resp_h: 72.16.97.212}", "{threat: c2}",
        "Android dropper check-in, HTTP POST to its server on port 8100 "
        "(rule 'ET MOBILE_MALWARE Android Dropper Checkin Activity (POST)')"),
}


def decide(test: Path) -> tuple[str, str]:
    """(kind, reason): kind is 'attack', 'benign' or 'missing'."""
    name = test.name
    if name in ATTACKS:
        return "attack", ATTACKS[name].reason
    prefix = next((p for p in PROTOCOL_PREFIXES if name.startswith(p)), None)
    if prefix is None:
        return "missing", "no protocol prefix in the name (engine, decoder or output test)"
    word = next((w for w in CAUTION if w in name), None)
    ticket = TICKET.search(name)
    if word is None and ticket:
        return "missing", f"name has Suricata ticket number {ticket.group(0).strip('-')}: a bug regression case"
    if word:
        return "missing", f"name keyword '{word}': not a plain protocol exchange"
    text = "\n".join(p.read_text(errors="replace") for p in sorted(test.glob("*.rules")))
    if (test / "test.yaml").is_file():
        text += (test / "test.yaml").read_text(errors="replace")
    m = ATTACK_WORDS.search(text)
    if m:
        return "missing", f"rules/test.yaml word '{m.group(0)}': may hold an attack sample"
    return "benign", f"name prefix '{prefix}': a {prefix.strip('-')} parser case; no attack word in rules/test.yaml"


HEADER = """\
# Label source: suricata-verify's test captures (OISF/suricata-verify tests/).
# GENERATED by scripts/suricata-verify-labels.py; edit that script's tables
# and rerun it, not this file. Each entry's comment is its reason.
#
# Service/encrypted/tunnel: nDPI's DPI verdicts (ndpiReader with the built-in
# ndpi tables; guesses by port or address dropped) for every flow.
# Threat, per test: hand-checked attacks (the attack flows only); `benign`
# for every flow of a plain protocol parser case (name prefix, no caution
# keyword in the name, no attack word in its rules); missing otherwise
# (engine/decoder tests, evasions, malformed or fuzzed input, Suricata bugs).
name: suricata-verify
type: ndpi
root: suricata-verify
origin: "OISF/suricata-verify tests/ @ 10a45e4 (2026-08-21)"
licence: "MIT"
tables: ndpi
dpi_only: true
rules_alone: true
captures:
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="suricata-verify folder (holding tests/)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    tests = sorted(p for p in (args.root / "tests").iterdir() if p.is_dir())
    if not tests:
        print(f"{args.root}/tests: no test folders", file=sys.stderr)
        return 1
    lines = [HEADER]
    skipped = []
    counts = {"attack": 0, "benign": 0, "missing": 0}
    for test in tests:
        kind, reason = decide(test)
        counts[kind] += 1
        if kind == "missing":
            skipped.append(f"#   {test.name}: {reason}")
            continue
        lines.append(f"  # {test.name}: {reason}")
        lines.append(f'  - glob: "tests/{test.name}/*"')
        lines.append("    rules:")
        if kind == "attack":
            a = ATTACKS[test.name]
            lines.append(f"      - match: {a.match}")
            lines.append(f"        labels: {a.labels}")
        else:
            lines.append("      - match: {}")
            lines.append("        labels: {threat: benign}")
    lines.append("# Tests with threat missing (nDPI's service/encrypted/tunnel still apply):")
    lines += skipped
    args.out.write_text("\n".join(lines) + "\n")
    print(f"{args.out}: {counts['attack']} attack tests, {counts['benign']} benign, {counts['missing']} missing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
