"""Checks of the Zeek package that need no Zeek binary.

Every Zeek script in the repository parses (zeekscript's tree-sitter
grammar), and the records, events and defaults in zeek_scripts/main.zeek
agree with the Python side of the wire contract (multa_broker/protocol.py,
flow.py, taxonomy.py): the field order of Multa::Flow and Multa::Result is
the order the bridge decodes them in.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest
import zeekscript

from multa_broker import context, flow, protocol, taxonomy

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "zeek_scripts"
MAIN = PACKAGE / "main.zeek"
SCRIPTS = sorted(PACKAGE.rglob("*.zeek")) + sorted((REPO / "tests" / "zeek").rglob("*.zeek"))


def _relative(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("path", SCRIPTS, ids=_relative)
def test_script_parses(path: Path) -> None:
    script = zeekscript.Script(path)
    ok = script.parse()
    assert ok and not script.has_error(), f"{_relative(path)}: {script.get_error()}"


def _strip_comments(text: str) -> str:
    # No string literal in a record body holds '#'.
    return re.sub(r"#[^\n]*", "", text)


def record_fields(text: str, name: str) -> tuple[tuple[str, str], ...]:
    """(field, type) pairs of ``type <name>: record { ... };`` in declaration order."""
    match = re.search(rf"type\s+{name}\s*:\s*record\s*\{{(.*?)\}}\s*;", text, re.S)
    assert match, f"no record {name} in {MAIN.name}"
    fields = []
    for decl in _strip_comments(match.group(1)).split(";"):
        decl = " ".join(decl.split())
        if not decl:
            continue
        field, _, rest = decl.partition(":")
        ftype = rest.split("&", 1)[0].strip()
        fields.append((field.strip(), ftype))
    return tuple(fields)


def export_default(text: str, name: str) -> str:
    """Initial value of ``option``/``const <name> = <value>`` (attributes dropped)."""
    match = re.search(rf"^\s*(?:option|const)\s+{name}\s*(?::[^=]+)?=\s*(.+?);\s*$", text, re.M)
    assert match, f"no option or const {name} in {MAIN.name}"
    return match.group(1).split("&", 1)[0].strip()


def table_literal(text: str, name: str) -> str:
    match = re.search(rf"option\s+{name}\s*:[^=]+=\s*\{{(.*?)\}}\s*;", text, re.S)
    assert match, f"no option {name} in {MAIN.name}"
    return _strip_comments(match.group(1))


@pytest.fixture(scope="module")
def main_text() -> str:
    return MAIN.read_text()


def test_flow_record_matches_protocol(main_text: str) -> None:
    assert record_fields(main_text, "Flow") == protocol.FLOW_FIELDS


def test_result_record_matches_protocol(main_text: str) -> None:
    assert record_fields(main_text, "Result") == protocol.RESULT_FIELDS


def test_record_parser_sees_a_reordering() -> None:
    # Guards the two tests above against a parser that always agrees.
    swapped = "type Flow: record {\n\torig_h: addr;\n\tuid: string &log;\n};"
    assert record_fields(swapped, "Flow") == (("orig_h", "addr"), ("uid", "string"))


def test_wire_events(main_text: str) -> None:
    flows = re.search(r"global\s+flows\s*:\s*event\((.*?)\)\s*;", main_text)
    results = re.search(r"global\s+results\s*:\s*event\((.*?)\)\s*;", main_text)
    assert protocol.FLOWS_EVENT == "Multa::flows" and protocol.RESULTS_EVENT == "Multa::results"
    assert flows and flows.group(1) == "node: string, flows: vector of Flow"
    assert results and results.group(1) == "results: vector of Result"
    assert re.search(r"^module Multa;", main_text, re.M)


def test_defaults_match_python_side(main_text: str) -> None:
    assert int(export_default(main_text, "max_packets")) == flow.DEFAULT_N
    assert int(export_default(main_text, "MAX_PACKETS")) == flow.MAX_N
    assert export_default(main_text, "flow_topic") == f'"{protocol.DEFAULT_FLOW_TOPIC}"'
    assert export_default(main_text, "result_topic") == f'"{protocol.DEFAULT_RESULT_TOPIC}"'


def test_host_context_constants_match_python_side() -> None:
    text = (PACKAGE / "context.zeek").read_text()
    assert export_default(text, "host_context_window") == f"{context.WINDOW_S:g} secs"
    assert int(export_default(text, "host_context_max_entries")) == context.MAX_ENTRIES
    assert int(export_default(text, "SWEEP_EVERY")) == context.ContextTracker.SWEEP_EVERY
    assert export_default(text, "host_context") == "T"
    assert dict(protocol.FLOW_FIELDS)["ctx"] == "vector of count"


def test_log_columns_cover_the_default_tasks(main_text: str) -> None:
    columns = dict(record_fields(main_text, "Info"))
    for task in taxonomy.TASKS:
        assert columns.get(task) == "string", task
        assert columns.get(f"{task}_score") == "double", task


def test_class_options_name_known_classes(main_text: str) -> None:
    threat = set(taxonomy.TASKS["threat"])
    tunnel = set(taxonomy.TASKS["tunnel"])
    thresholds = set(re.findall(r'\["([^"]+)"\]', table_literal(main_text, "threat_thresholds")))
    assert thresholds and thresholds <= threat - {"benign"}
    assert set(re.findall(r'"([^"]+)"', table_literal(main_text, "benign_threat_classes"))) == {"benign", taxonomy.UNKNOWN}
    assert set(re.findall(r'"([^"]+)"', table_literal(main_text, "tunnel_classes"))) == tunnel - {"none"}
    host = set(re.findall(r'"([^"]+)"', table_literal(main_text, "host_classes")))
    assert host and host <= threat


def test_notice_threshold_defaults_match_what_loso_measures(main_text: str) -> None:
    """The out-of-source FP table at the package's defaults (model/thresholds.py) reads these numbers."""
    from multa_broker.model import thresholds

    pairs = re.findall(r'\["([^"]+)"\]\s*=\s*([0-9.]+)', table_literal(main_text, "threat_thresholds"))
    assert {k: float(v) for k, v in pairs} == thresholds.PACKAGE_NOTICE_THRESHOLDS
    default = re.search(r"option\s+default_threat_threshold\s*=\s*([0-9.]+)\s*;", main_text)
    assert default and float(default.group(1)) == thresholds.PACKAGE_DEFAULT_THRESHOLD


def test_zkg_meta() -> None:
    meta = configparser.ConfigParser()
    assert meta.read(REPO / "zkg.meta"), "zkg.meta missing"
    pkg = meta["package"]
    script_dir = REPO / pkg["script_dir"]
    assert (script_dir / "__load__.zeek").is_file()
    assert re.search(r"^\s*zeek\s*>=\s*8\.0\.0\s*$", pkg["depends"], re.M)
    assert "tests/zeek" in pkg["test_command"] and "btest" in pkg["test_command"]
    assert pkg["description"].strip() and pkg["tags"].strip()


def test_package_loads_every_script() -> None:
    loads = set(re.findall(r"^@load\s+\./(\S+)", (PACKAGE / "__load__.zeek").read_text(), re.M))
    scripts = {p.stem for p in PACKAGE.glob("*.zeek")} - {"__load__", "offline"}
    assert loads == scripts
