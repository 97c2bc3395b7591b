"""Labels from Zeek's own logs: run Zeek over a capture, map conn.log's ``service``.

This is how an operator labels their own traffic to retrain on their
network: Zeek's dynamic protocol detection names the service of each
connection in conn.log (``http``, ``ssl``, ``dns``, ``smb,gssapi,ntlm``, ...),
and a connection with an entry in ssl.log or ssh.log (by ``uid``) carried
encrypted traffic. Each name maps through :data:`ZEEK_SERVICES` (or a
source's own ``protocols``, which override single names); names that map to
nothing say nothing, and where the names of one connection disagree on a
task, that task stays missing. One exception: Zeek's ``service`` is the
ordered set of analyzers in the order they confirmed, and a protocol that
switched to TLS in-band (STARTTLS and the like) is logged as that protocol
then ``ssl`` (``smtp,ssl``, ``imap,ssl``, ``ftp,ssl``, ``mysql,ssl``); the
rest of the connection is TLS, so the service is ``tls`` (as nDPI names the
same captures SMTPS/IMAPS/POPS/FTPS). Connections inside a tunnel
(``tunnel_parents`` set) are left out: their endpoints are not the flow's.

Zeek runs as ``zeek -r CAPTURE`` in a temporary folder, with ``-C`` unless
the build verifies checksums (``--verify-checksums``), so Zeek and the
extractor see the same packets. Zeek (libpcap) cannot read what the
extractor can: a gzip'd capture ("unknown file format"), one cut short (a
fatal "truncated dump file" that loses every log), a pcapng whose interfaces
differ in snapshot length. For those, the packets the extractor reads are
written to a plain pcap in the temporary folder and Zeek runs on that. Its
conn/ssl/ssh logs are cached like ndpiReader's verdicts::

    $MULTA_CACHE_DIR/zeek/<zeek version>-<C|checksums>/<sha256 of the capture>/{conn,ssl,ssh}.log

Flows join on the 5-tuple and the connection's start time, as jsonl.py does.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

from multa_broker.dataset.labelmap import CaptureRules, LabelSource, Labels, merged
from multa_broker.dataset.ndpireader import cache_root, file_sha256
from multa_broker.capture.reader import open_capture
from multa_broker.errors import CaptureError, MultaError
from multa_broker.flow import FlowKey

TS_TOLERANCE = 1.0
TIMEOUT_S = 600
LOGS = ("conn.log", "ssl.log", "ssh.log")

#: Zeek's service names (conn.log) -> labels, following docs/datasets.md's conventions.
#: A name is an analyzer's (``zeek -NN``) lowercased, or one a script adds;
#: ``ldap_tcp``/``ldap_udp``, ``postgresql``, ``quic`` and ``redis`` are Spicy
#: analyzers, absent from a Zeek built without Spicy.
#: Encrypted comes from ssl.log/ssh.log; "cleartext" here marks protocols that
#: are clear text by design and would not appear in ssl.log.
ZEEK_SERVICES: dict[str, Labels] = {
    "dns": {"service": "dns"},
    "http": {"service": "http"},
    "ssl": {"service": "tls", "encrypted": "encrypted"},
    "dtls": {"service": "tls", "encrypted": "encrypted"},
    "quic": {"service": "quic", "encrypted": "encrypted"},
    "ssh": {"service": "ssh", "encrypted": "encrypted"},
    "smtp": {"service": "mail"},
    "pop3": {"service": "mail"},
    "imap": {"service": "mail"},
    "ftp": {"service": "ftp"},
    "ftp-data": {"service": "ftp"},
    "smb": {"service": "windows"},
    "dce_rpc": {"service": "windows"},
    "krb": {"service": "windows"},
    "krb_tcp": {"service": "windows"},
    "ldap_tcp": {"service": "windows"},
    "ldap_udp": {"service": "windows"},
    "ntlm": {"service": "windows"},
    "gssapi": {"service": "windows"},
    "rdp": {"service": "remote"},
    "rdpeudp": {"service": "remote"},
    "rfb": {"service": "remote"},
    "telnet": {"service": "remote", "encrypted": "cleartext"},
    "sip": {"service": "voip"},
    "mysql": {"service": "database"},
    "postgresql": {"service": "database"},
    "redis": {"service": "database"},
    "mqtt": {"service": "iot"},
    "modbus": {"service": "iot", "encrypted": "cleartext"},
    "dnp3_tcp": {"service": "iot", "encrypted": "cleartext"},
    "dnp3_udp": {"service": "iot", "encrypted": "cleartext"},
    "ntp": {"service": "netmgmt"},
    "dhcp": {"service": "netmgmt", "encrypted": "cleartext"},
    "snmp": {"service": "netmgmt"},
    "syslog": {"service": "netmgmt", "encrypted": "cleartext"},
    "radius": {"service": "netmgmt"},
    "irc": {"service": "other"},
    "xmpp": {"service": "other"},
    "websocket": {"service": "http"},
    # Added by Zeek's scripts rather than an analyzer (base/protocols/irc/dcc-send.zeek,
    # base/protocols/ftp/gridftp.zeek).
    "irc-dcc-data": {"service": "other"},
    "gridftp": {"service": "ftp"},
    "gridftp-data": {"service": "ftp"},
    # Packet analyzers confirm on the outer UDP connection of a tunnel (its
    # inner connections have tunnel_parents and are left out), as ndpi.yaml
    # labels Teredo and GTP.
    "gtpv1": {"service": "other", "tunnel": "other-tunnel"},
    "teredo": {"service": "other", "tunnel": "other-tunnel"},
    "ayiya": {"service": "other", "tunnel": "other-tunnel"},
    "vxlan": {"service": "other", "tunnel": "other-tunnel"},
    "geneve": {"service": "other", "tunnel": "other-tunnel"},
    # A SOCKS proxy connection says nothing itself; what it carries does
    # (socks,http is http; socks,ssl is tls).
    "socks": {},
    # Not a Zeek service name: Zeek leaves service empty for ICMP, but the
    # protocol itself is the fact (ICMP is netmgmt by our conventions).
    "icmp": {"service": "netmgmt", "encrypted": "cleartext"},
}


#: Protocols that Zeek 8 hands to its SSL analyzer in the same connection after
#: an in-band switch (STARTTLS, AUTH TLS, SSLRequest): with ``ssl`` among the
#: names, the connection's service is the TLS layer's.
STARTTLS = frozenset({"smtp", "imap", "pop3", "xmpp", "ftp", "gridftp", "irc", "mysql",
                      "postgresql", "ldap_tcp"})


def _parse_tsv(path: Path) -> Iterator[dict[str, str]]:
    """Rows of one Zeek ASCII log (TSV with ``#fields``); unset ``-`` and ``(empty)`` become ''."""
    sep, fields = "\t", None
    try:
        fh = open(path, encoding="utf-8", errors="replace")
    except OSError as e:
        raise MultaError(f"{path}: cannot read Zeek log ({e.strerror})") from None
    with fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\n")
            if line.startswith("#separator"):
                # "#separator \x09": the separator is written as an escape.
                sep = line.split(" ", 1)[1].encode().decode("unicode_escape")
            elif line.startswith("#fields"):
                fields = line.split(sep)[1:]
            elif line.startswith("#") or not line:
                continue
            elif fields is None:
                raise MultaError(f"{path}:{lineno}: a row before the #fields header (not a Zeek TSV log?)")
            else:
                values = line.split(sep)
                if len(values) != len(fields):
                    raise MultaError(f"{path}:{lineno}: {len(values)} columns, the header has {len(fields)}")
                yield {f: ("" if v in ("-", "(empty)") else v) for f, v in zip(fields, values)}


@dataclass(frozen=True, slots=True)
class ZeekConn:
    uid: str
    proto: str
    orig: tuple[str, int]
    resp: tuple[str, int]
    ts: float
    services: tuple[str, ...]
    tunnelled: bool


def _services(field: str) -> tuple[str, ...]:
    """conn.log's ``service`` names, without analyzers that failed.

    With ``DPD::track_removed_services_in_connection`` (off by default) Zeek
    keeps a failed analyzer's name and adds it again prefixed ``-``
    (``http,-http``): neither is the service. By default it just removes it.
    """
    names = [s for s in field.split(",") if s]
    failed = {s[1:] for s in names if s.startswith("-")}
    return tuple(s for s in names if not s.startswith("-") and s not in failed)


def parse_conn_log(path: str | Path) -> list[ZeekConn]:
    out = []
    for row in _parse_tsv(Path(path)):
        try:
            out.append(ZeekConn(
                uid=row["uid"], proto=row["proto"],
                orig=(row["id.orig_h"], int(row["id.orig_p"])), resp=(row["id.resp_h"], int(row["id.resp_p"])),
                ts=float(row["ts"]),
                services=_services(row.get("service", "")),
                tunnelled=bool(row.get("tunnel_parents", "")),
            ))
        except (KeyError, ValueError) as e:
            raise MultaError(f"{path}: conn.log row lacks a field or has a bad value ({e})") from None
    return out


def uids_in(path: str | Path) -> set[str]:
    """The connection uids a log (ssl.log, ssh.log) names; none when it does not exist."""
    path = Path(path)
    return {row["uid"] for row in _parse_tsv(path) if row.get("uid")} if path.is_file() else set()


def labels_for(source: LabelSource, conn: ZeekConn, encrypted_uids: set[str]) -> Labels:
    """One connection's labels: its service names mapped, encrypted from ssl/ssh logs."""
    if conn.tunnelled:
        return {}
    table = {**ZEEK_SERVICES, **source.protocols}
    out: dict[str, str | None] = {}
    names = (set(conn.services) | ({"icmp"} if conn.proto == "icmp" else set())) - set(source.skip)
    # STARTTLS and the like: the TLS layer names the service, not the protocol it started in.
    upgraded = names & STARTTLS if "ssl" in names else set()
    for name in sorted(names):
        for task, cls in (table.get(name) or {}).items():
            if cls is None or (task == "service" and name in upgraded):
                continue
            if task in out and out[task] != cls:
                out[task] = None
            elif task not in out:
                out[task] = cls
    if conn.uid in encrypted_uids:
        # ssl.log/ssh.log saw a handshake: encrypted, unless a name says clear text by design.
        out["encrypted"] = "encrypted" if out.get("encrypted", "encrypted") == "encrypted" else None
    if not any(v for v in out.values()):
        return {}
    return merged(source.defaults, out)


@lru_cache(maxsize=4)
def zeek_version(zeek: str = "zeek") -> str:
    exe = shutil.which(zeek)
    if exe is None:
        raise MultaError(f"{zeek}: not found on PATH; the zeek label source runs Zeek over each capture: "
                         "install Zeek (https://zeek.org) and put its bin/ on PATH")
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    m = re.search(r"version (\S+)", proc.stdout + proc.stderr)
    if proc.returncode != 0 or not m:
        raise MultaError(f"{exe}: `zeek --version` failed: {(proc.stderr or proc.stdout).strip()[:200]}")
    return m.group(1)


def rewrite_for_zeek(capture: Path, out: Path) -> bool:
    """Write the packets the extractor reads from ``capture`` to ``out``, a plain
    microsecond pcap, up to any cut or damage. False when there is nothing to
    write, or the packets have more than one link type (a pcap holds one)."""
    linktype = None
    try:
        with open(out, "wb") as fh:
            try:
                for ts, data, wirelen, lt in open_capture(capture):
                    if linktype is None:
                        linktype = lt
                        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, lt))
                    elif lt != linktype:
                        return False
                    sec = int(ts)
                    usec = min(int(round((ts - sec) * 1e6)), 999_999)
                    fh.write(struct.pack("<IIII", sec, usec, len(data), wirelen) + data)
            except CaptureError:
                pass  # keep the packets before the damage, as the extractor does
    except OSError as e:
        raise MultaError(f"{out}: cannot write ({e.strerror})") from None
    return linktype is not None


@dataclass(frozen=True)
class ZeekRunner:
    """Runs Zeek over captures, caching conn/ssl/ssh logs per capture."""

    verify_checksums: bool = False
    zeek: str = "zeek"
    cache: Path | None = None

    def check(self) -> str:
        return zeek_version(self.zeek)

    def cache_dir(self) -> Path:
        root = self.cache if self.cache is not None else cache_root() / "zeek"
        return root / f"{self.check()}-{'checksums' if self.verify_checksums else 'C'}"

    def logs(self, capture: str | Path) -> Path:
        """Folder with the capture's conn.log (and ssl.log, ssh.log where Zeek wrote them)."""
        capture = Path(capture).resolve()
        out = self.cache_dir() / file_sha256(capture)
        if (out / "conn.log").is_file():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=out.parent, suffix=".run"))
        try:
            with open(capture, "rb") as fh:
                gzipped = fh.read(2) == b"\x1f\x8b"
            error = None if gzipped else self._run(capture, work, capture)
            if gzipped or error:
                # Zeek could not read it (gzip, a cut, mixed pcapng snap lengths): give it the
                # packets the extractor reads, as a plain pcap; a failed first run left no logs.
                plain = work / "capture.pcap"
                if not rewrite_for_zeek(capture, plain):
                    raise MultaError(error or f"{capture}: no packets Zeek could be given")
                for name in LOGS:
                    (work / name).unlink(missing_ok=True)
                if (again := self._run(plain, work, capture)) is not None:
                    raise MultaError(error or again)
            keep = work / "logs"
            keep.mkdir()
            for name in LOGS:
                if (work / name).is_file():
                    shutil.move(str(work / name), keep / name)
            if not (keep / "conn.log").is_file():
                # No connections at all: an empty log, so the cache says so too.
                (keep / "conn.log").write_text("#separator \\x09\n#fields\tts\tuid\tid.orig_h\tid.orig_p"
                                               "\tid.resp_h\tid.resp_p\tproto\tservice\n")
            try:
                os.rename(keep, out)  # atomic: a crash leaves no half-filled cache entry
            except OSError:
                if not (out / "conn.log").is_file():
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return out

    def _run(self, capture: Path, work: Path, name: Path) -> str | None:
        """Run Zeek over ``capture`` in ``work``; None, or a one-line error naming ``name``."""
        args = [shutil.which(self.zeek) or self.zeek, *([] if self.verify_checksums else ["-C"]),
                "-r", str(capture)]
        try:
            proc = subprocess.run(args, cwd=work, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise MultaError(f"{name}: zeek took over {TIMEOUT_S} s") from None
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            return f"{name}: zeek failed (exit {proc.returncode}): {last}"
        return None


@dataclass
class ZeekLabeller:
    """Labels the flows of one capture from Zeek's logs of it, plus the source's capture rules."""

    source: LabelSource
    logs_dir: Path
    relpath: str
    _index: dict[tuple, list[tuple[float, Labels]]] = field(default_factory=dict, init=False)
    _overrides: CaptureRules | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        enc = uids_in(self.logs_dir / "ssl.log") | uids_in(self.logs_dir / "ssh.log")
        for conn in parse_conn_log(self.logs_dir / "conn.log"):
            labels = labels_for(self.source, conn, enc)
            if labels:
                self._index.setdefault((conn.proto, *conn.orig, *conn.resp), []).append((conn.ts, labels))
        self._overrides = self.source.rules_for(self.relpath)

    def __call__(self, key: FlowKey) -> Labels:
        base = None
        # Zeek's orientation first; the flipped tuple in case one side guessed the other way.
        for tup in ((key.proto, key.orig_h, key.orig_p, key.resp_h, key.resp_p),
                    (key.proto, key.resp_h, key.resp_p, key.orig_h, key.orig_p)):
            cands = self._index.get(tup)
            if cands:
                ts, labels = min(cands, key=lambda c: abs(c[0] - key.ts))
                if abs(ts - key.ts) <= TS_TOLERANCE:
                    base = labels
                    break
        extra = self._overrides.label(key) if self._overrides else None
        if base is None and not (self.source.rules_alone and extra):
            return {}
        return merged(base, extra)


def lazy_zeek_labeller(source: LabelSource, runner: ZeekRunner, capture: Path,
                       relpath: str) -> Callable[[FlowKey], Labels]:
    """A labeller that runs Zeek (or reads its cache) on first use, not while planning."""
    state: dict[str, ZeekLabeller] = {}

    def label(key: FlowKey) -> Labels:
        if "l" not in state:
            state["l"] = ZeekLabeller(source, runner.logs(capture), relpath)
        return state["l"](key)

    return label
