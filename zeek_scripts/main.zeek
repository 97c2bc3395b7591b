##! multa: multi-task traffic classification for Zeek.
##!
##! This script declares the package's public interface: the wire records
##! shared with the Python bridge (:zeek:type:`Multa::Flow`,
##! :zeek:type:`Multa::Result`), the events that carry them, the multa.log
##! stream, the notice types, the hooks and every option but host context's
##! (context.zeek). The work happens in the scripts loaded beside it
##! (context, collect, transport, results, notices, trace).
##!
##! Wire contract: the field order of Flow and Result is the order the bridge
##! reads them in (multa_broker/protocol.py). Never reorder, never insert.

@load base/frameworks/cluster
@load base/frameworks/config
@load base/frameworks/notice
@load base/frameworks/telemetry

module Multa;

export {
	## The multa.log stream.
	redef enum Log::ID += { LOG };

	## A policy hook for the multa.log stream.
	global log_policy: Log::PolicyHook;

	redef enum Notice::Type += {
		## A connection was classified as a threat other than benign
		## with a score at or above its class threshold
		## (:zeek:see:`Multa::threat_thresholds`). ``$sub`` holds the
		## class. The identifier is originator, responder and class;
		## originator and class for :zeek:see:`Multa::host_classes`;
		## responder and class for :zeek:see:`Multa::target_classes`.
		Threat,
		## A connection was classified as a tunnel or VPN with a score at
		## or above :zeek:see:`Multa::tunnel_threshold`. ``$sub`` holds
		## the class. Identified by originator, responder, responder port
		## and class.
		Tunnel,
		## One source sent at least :zeek:see:`Multa::host_threshold`
		## flows of one class in :zeek:see:`Multa::host_classes` within
		## :zeek:see:`Multa::host_window`. ``$sub`` holds the class.
		## Identified by source and class.
		Threat_Source,
	};

	## One connection's first packets, as sent to the bridge.
	## Field order is the wire contract.
	type Flow: record {
		## The connection's unique ID.
		uid: string;
		## The originator's address.
		orig_h: addr;
		## The originator's port (carries the transport protocol).
		orig_p: port;
		## The responder's address.
		resp_h: addr;
		## The responder's port.
		resp_p: port;
		## Time of the connection's first packet.
		ts: time;
		## IP total length of each packet, in bytes (IPv6: payload + 40).
		sizes: vector of count;
		## T where the originator sent the packet.
		dirs: vector of bool;
		## Microseconds since the previous packet; 0 for the first.
		iats: vector of count;
		## Host context at the connection's start, six counts: the
		## originator's connections, their distinct responder addresses,
		## their distinct responder ports, those to this responder
		## endpoint; connections to this endpoint and their distinct
		## originators, over :zeek:see:`Multa::host_context_window`
		## (context.zeek). Absent with :zeek:see:`Multa::host_context`
		## off. Added in version 2 of the wire contract.
		ctx: vector of count &optional;
	};

	## How flows travel to the bridge (:zeek:see:`Multa::flow_encoding`).
	type FlowEncoding: enum {
		## :zeek:see:`Multa::flows` with :zeek:type:`Multa::Flow`
		## records: each number its own value.
		TYPED,
		## :zeek:see:`Multa::packed_flows` with
		## :zeek:type:`Multa::PackedFlow` records: a flow's sequences
		## and host context in one string.
		PACKED,
	};

	## A :zeek:type:`Multa::Flow` in the packed encoding: the same
	## first six fields, then its sequences and host context packed
	## into one string. Field order is the wire contract.
	type PackedFlow: record {
		## The connection's unique ID.
		uid: string;
		## The originator's address.
		orig_h: addr;
		## The originator's port (carries the transport protocol).
		orig_p: port;
		## The responder's address.
		resp_h: addr;
		## The responder's port.
		resp_p: port;
		## Time of the connection's first packet.
		ts: time;
		## ``sizes``, ``dirs``, ``iats`` and, where present, ``ctx``
		## as :zeek:id:`cat_sep` renders them with separator ``|``,
		## e.g. ``[60, 52]|[T, F]|[0, 310]|[4, 2, 3, 0, 0, 0]``
		## (version :zeek:see:`Multa::PACKED_VERSION`).
		packed: string;
	};

	## Version of the packed encoding that
	## :zeek:see:`Multa::packed_flows` carries. Version 2 packs as 1 did
	## and tells the bridge to answer with
	## :zeek:see:`Multa::packed_results`.
	const PACKED_VERSION = 2;

	## Version of the JSON text that :zeek:see:`Multa::packed_results`
	## carries.
	const PACKED_RESULT_VERSION = 1;

	## One connection's verdicts, as sent by the bridge: one label and
	## score per task. Field order is the wire contract.
	type Result: record {
		## The connection's unique ID, as in the :zeek:type:`Multa::Flow`.
		uid: string;
		## Name and version of the model that classified the flow.
		model: string;
		## Task names, e.g. service, encrypted, tunnel, threat.
		tasks: vector of string;
		## One label per task.
		labels: vector of string;
		## One score (model confidence, 0..1) per task.
		scores: vector of double;
	};

	## The multa.log record: one row per classified connection. Tasks the
	## package knows get a label and a score column; other tasks go to the
	## ``extra_*`` columns.
	type Info: record {
		## Time of the connection's first packet (as conn.log's ts).
		ts: time &log;
		## The connection's unique ID.
		uid: string &log;
		## The connection's endpoints.
		id: conn_id &log;
		## Packets the model saw.
		packets: count &log;
		## The model that classified the flow.
		model: string &log;
		## Application service class.
		service: string &log &optional;
		## Score of ``service``.
		service_score: double &log &optional;
		## Encrypted or cleartext.
		encrypted: string &log &optional;
		## Score of ``encrypted``.
		encrypted_score: double &log &optional;
		## Tunnel class (none, vpn, tor, ...).
		tunnel: string &log &optional;
		## Score of ``tunnel``.
		tunnel_score: double &log &optional;
		## Threat class (benign, scan, bruteforce, ...).
		threat: string &log &optional;
		## Score of ``threat``.
		threat_score: double &log &optional;
		## Tasks the package has no column for, in result order.
		extra_tasks: vector of string &log &optional;
		## Labels of ``extra_tasks``.
		extra_labels: vector of string &log &optional;
		## Scores of ``extra_tasks``.
		extra_scores: vector of double &log &optional;
	};

	# --- Collection ------------------------------------------------------

	## Packets per flow (1..64): a connection is sent once it has this
	## many. Zeek reads its packet thresholds when parsing ends, and
	## this package registers 1..max_packets when it is parsed: a redef
	## after loading the package must also register the new thresholds,
	## ``redef ConnThreshold::generic_packet_thresholds +=
	## Multa::packet_thresholds(N);`` (Zeek stops with this hint if
	## it is missing).
	const max_packets = 20 &redef;

	## A connection that ends (or reaches :zeek:see:`Multa::max_age`)
	## before :zeek:see:`Multa::max_packets` is sent if it has at least
	## this many packets. The default of 1 keeps single-packet scan
	## probes, which the threat task needs.
	option min_packets = 1;

	## Send a connection that has not reached
	## :zeek:see:`Multa::max_packets` once it is this old (time since its
	## first packet), if it has :zeek:see:`Multa::min_packets`. 0 secs
	## turns this off: such connections are sent when they end.
	option max_age = 0 secs;

	## Flows per :zeek:see:`Multa::flows` event; a full batch is
	## published at once. Each event costs Zeek about 90 us of CPU
	## beyond its flows (Zeek 8.0's WebSocket API: threads waking up,
	## framing), several flows' worth, so batches should not be small.
	option batch_size = 256;

	## A batch that is not full is published this long after its first
	## flow (network time: with ``zeek -r`` it follows the trace). On a
	## quiet link, where batches do not fill, a longer interval means
	## fewer events and later verdicts.
	option batch_interval = 500 msecs;

	## Pause collection while no bridge is connected: no per-packet
	## work, nothing published. Set to F when the bridge reaches Zeek
	## some other way than this node's WebSocket server (e.g. a native
	## Broker peering), or to collect regardless.
	option pause_without_bridge = T;

	## How flows travel to the bridge: PACKED (a few values per flow,
	## which Zeek's WebSocket path and the bridge convert far more
	## cheaply) or TYPED (:zeek:type:`Multa::Flow` records as they
	## are, e.g. for other consumers). The bridge reads both.
	option flow_encoding = PACKED;

	## A hook to veto single flows before they are sent (e.g. to skip
	## internal traffic). Break to drop the flow.
	global flow_policy: hook(f: Flow);

	# --- Transport -------------------------------------------------------

	## Topic flows are published on. With :zeek:see:`Multa::shards` > 1,
	## shard i of K uses ``<flow_topic>/<i>-of-<K>``.
	option flow_topic = "multa/flows";

	## Topic the bridge answers on. A standalone node subscribes to
	## ``result_topic``; a cluster node to ``result_topic + "/" + node``
	## (the bridge must answer the node named in the flows event).
	## Read at startup.
	const result_topic = "multa/results" &redef;

	## Split flows over this many topics by a hash of the uid so that
	## several bridges share the load, one per shard topic.
	const shards = 1 &redef;

	## Start a WebSocket server for the bridge on the node given by
	## :zeek:see:`Multa::websocket_node`.
	const listen_websocket = F &redef;

	## Address of the WebSocket server. Zeek's WebSocket API has no
	## authentication: listen beyond localhost only with TLS and peer
	## verification, or behind a firewall.
	const websocket_addr = 127.0.0.1 &redef;

	## Port of the WebSocket server.
	const websocket_port = 27999/tcp &redef;

	## TLS certificate file; TLS is on when this and
	## :zeek:see:`Multa::websocket_tls_key_file` are set.
	const websocket_tls_cert_file = "" &redef;

	## TLS key file.
	const websocket_tls_key_file = "" &redef;

	## CA file; when set, clients must present a certificate it signed.
	const websocket_tls_ca_file = "" &redef;

	## The cluster node that runs the WebSocket server. Empty: the
	## manager in a cluster, the node itself when standalone.
	const websocket_node = "" &redef;

	## How long a sent flow waits for its result before it is
	## forgotten; later results for it are dropped.
	option result_timeout = 5 mins;

	# --- Verdicts ----------------------------------------------------------

	## Threat classes that never raise a notice.
	option benign_threat_classes: set[string] = { "benign", "unknown" };

	## Minimum score per threat class for a :zeek:see:`Multa::Threat`
	## notice; classes not listed use
	## :zeek:see:`Multa::default_threat_threshold`.
	option threat_thresholds: table[string] of double = {
		["scan"] = 0.9,
		["bruteforce"] = 0.98,
		["dos"] = 0.9,
		["c2"] = 0.8,
		["exploit"] = 0.9,
	};

	## Minimum score for threat classes missing from
	## :zeek:see:`Multa::threat_thresholds`.
	option default_threat_threshold = 0.9;

	## Tunnel classes that raise a :zeek:see:`Multa::Tunnel` notice.
	option tunnel_classes: set[string] = { "vpn", "tor", "dns-tunnel", "other-tunnel" };

	## Minimum score for a :zeek:see:`Multa::Tunnel` notice.
	option tunnel_threshold = 0.9;

	## Threat classes that are counted per source for
	## :zeek:see:`Multa::Threat_Source`; their per-flow
	## :zeek:see:`Multa::Threat` notices are identified by source and
	## class only, so suppression collapses them.
	option host_classes: set[string] = { "scan", "bruteforce" };

	## Threat classes whose per-flow :zeek:see:`Multa::Threat` notices
	## are identified by responder and class: a flood comes from many,
	## often spoofed, sources, so suppression collapses it into one
	## notice per target instead of one per source.
	option target_classes: set[string] = { "dos" };

	## Flows of one class from one source within
	## :zeek:see:`Multa::host_window` that raise
	## :zeek:see:`Multa::Threat_Source`.
	option host_threshold = 20;

	## Window for :zeek:see:`Multa::host_threshold`. Read at startup.
	const host_window = 5 mins &redef;

	## Called for every valid result before it is logged. Handlers may
	## change *info*; break to skip logging, notices and
	## :zeek:see:`Multa::classified`.
	global verdict_policy: hook(info: Info, r: Result);

	## Raised after a result was logged (or skipped by
	## :zeek:see:`Multa::log_policy`) and notices were raised. The
	## connection itself may be gone; *info* carries its uid and id.
	global classified: event(info: Info, r: Result);

	## Raised for every multa.log record.
	global log_multa: event(rec: Info);

	# --- Offline -------------------------------------------------------------

	## With ``zeek -r``: hold packet processing until a bridge connects,
	## send every flow at the end of the trace and wait for its result,
	## then terminate. Needs ``exit_only_after_terminate = T`` and the
	## WebSocket server; load ``offline.zeek`` to set all three.
	const offline_wait_for_bridge = F &redef;

	## How long to wait for a bridge before stopping without reading the
	## trace.
	option bridge_wait_timeout = 30 secs;

	## How long to wait for outstanding results after the trace ended.
	option offline_result_timeout = 60 secs;

	# --- Wire events ----------------------------------------------------------

	## Zeek -> bridge: a batch of flows from *node*.
	global flows: event(node: string, flows: vector of Flow);

	## Zeek -> bridge, with :zeek:see:`Multa::flow_encoding` PACKED: a
	## batch of flows from *node* in version *version* of the packed
	## encoding (:zeek:see:`Multa::PACKED_VERSION`).
	global packed_flows: event(node: string, version: count, flows: vector of PackedFlow);

	## Bridge -> Zeek: verdicts for flows this node sent.
	global results: event(results: vector of Result);

	## Bridge -> Zeek, answering packed flows: the same verdicts as one
	## JSON array of :zeek:type:`Multa::Result` objects (keys are the
	## field names), version *version*
	## (:zeek:see:`Multa::PACKED_RESULT_VERSION`), read with
	## :zeek:id:`from_json`.
	global packed_results: event(version: count, results: string);

	## Between cluster nodes: how many bridges the WebSocket node has.
	global bridge_status: event(bridges: count);
}

# Largest :zeek:see:`Multa::max_packets` the wire contract allows.
const MAX_PACKETS = 64;

# The node name sent with flows; the bridge answers
# ``result_topic + "/" + node`` when it answers per node.
function node_name(): string
	{
	return Cluster::node != "" ? Cluster::node : "zeek";
	}

# Counters for operators (Telemetry framework: zeek_multa_*).
global flows_cf = Telemetry::register_counter_family(Telemetry::MetricOpts(
	$prefix="zeek",
	$name="multa-flows",
	$unit="",
	$help_text="Flows multa published for the bridge"));

global flows_counter = Telemetry::counter_with(flows_cf);

global batches_cf = Telemetry::register_counter_family(Telemetry::MetricOpts(
	$prefix="zeek",
	$name="multa-batches",
	$unit="",
	$help_text="Multa::packed_flows or Multa::flows events multa published; flows over batches is the mean batch size"));

global batches_counter = Telemetry::counter_with(batches_cf);

global dropped_cf = Telemetry::register_counter_family(Telemetry::MetricOpts(
	$prefix="zeek",
	$name="multa-dropped",
	$unit="",
	$label_names=vector("reason"),
	$help_text="Packets, flows or results multa left out, by reason"));

global results_cf = Telemetry::register_counter_family(Telemetry::MetricOpts(
	$prefix="zeek",
	$name="multa-results",
	$unit="",
	$help_text="Results multa received from the bridge"));

global results_counter = Telemetry::counter_with(results_cf);

# Counters by label, made once: counter_family_inc() builds its labels on
# every call.
global dropped_counters: table[string] of Telemetry::Counter;

function count_dropped(reason: string, amount: count &default=1)
	{
	if ( reason !in dropped_counters )
		dropped_counters[reason] = Telemetry::counter_with(dropped_cf, vector(reason));

	Telemetry::counter_inc(dropped_counters[reason], amount + 0.0);
	}

event zeek_init() &priority=5
	{
	Log::create_stream(Multa::LOG, Log::Stream($columns=Info, $ev=log_multa,
	    $path="multa", $policy=log_policy));

	if ( max_packets < 1 || max_packets > MAX_PACKETS )
		Reporter::fatal(fmt("Multa::max_packets is %d; it must be 1..%d",
		    max_packets, MAX_PACKETS));

	if ( shards < 1 )
		Reporter::fatal("Multa::shards must be at least 1");
	}
