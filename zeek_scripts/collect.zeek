##! Per-connection packet collection and flow emission.
##!
##! Zeek's ConnSize analyzer raises
##! :zeek:see:`conn_generic_packet_threshold_crossed` once for each total
##! packet count in :zeek:see:`ConnThreshold::generic_packet_thresholds`,
##! right after the packet that reached it. Registering 1..64 gives one
##! event per packet for the first 64 packets of every connection and none
##! after, so this script never handles :zeek:see:`new_packet`. In each
##! event, the side whose ``num_pkts`` went up sent the packet and the rise
##! of ``num_bytes_ip`` (both sides) is its IP length.
##!
##! A connection is emitted (queued for the bridge) exactly once: when it
##! reaches :zeek:see:`Multa::max_packets`, when it ends with at least
##! :zeek:see:`Multa::min_packets`, or at :zeek:see:`Multa::max_age`.
##! Queued flows leave in batches (:zeek:see:`Multa::batch_size`,
##! :zeek:see:`Multa::batch_interval`).

@load base/protocols/conn
@load ./main

module Multa;

export {
	## Per-connection collection state.
	type State: record {
		## The connection's id (shared with the connection record, so it
		## follows role flips).
		id: conn_id;
		## The connection's uid.
		uid: string;
		## Time of the first packet.
		ts: time;
		## Time of the latest packet.
		last_ts: time;
		## Features collected so far.
		sizes: vector of count;
		dirs: vector of bool;
		iats: vector of count;
		## Originator address and port when ``dirs`` was last oriented;
		## a difference means Zeek flipped the roles.
		orig_h: addr;
		orig_p: port;
		## Counters after the previous packet.
		orig_pkts: count;
		resp_pkts: count;
		bytes_ip: count;
		## No more packets are appended (emitted, full or a gap).
		stopped: bool &default=F;
		## Queued for the bridge (or vetoed by the flow policy).
		emitted: bool &default=F;
	};

	## Emits every pending connection that has
	## :zeek:see:`Multa::min_packets`, then publishes every batch.
	## The offline mode calls it at the end of the trace.
	global flush_all: function(reason: string);

	## Publishes queued flows now.
	global flush_batches: function();

	## Whether per-packet collection is on (see
	## :zeek:see:`Multa::pause_without_bridge`).
	global is_collecting: function(): bool;

	## The topic of flow shard *shard* (0-based).
	global shard_topic: function(shard: count): string;
}

redef record connection += {
	## multa's collection state; absent for connections whose first
	## packet arrived while collection was paused.
	multa: State &optional;
};

## One event per packet for the first MAX_PACKETS packets. The set is read
## once when parsing ends, so it covers the largest legal max_packets and
## the handler ignores what lies beyond the configured one; this keeps
## ``redef Multa::max_packets`` working wherever it appears.
function thresholds_upto(n: count): set[count]
	{
	local s: set[count] = set();
	local i = 1;
	while ( i <= n )
		{
		add s[i];
		++i;
		}
	return s;
	}

redef ConnThreshold::generic_packet_thresholds += thresholds_upto(MAX_PACKETS);

type Batch: record {
	flows: vector of Flow;
	## Bumped on every publish so that stale flush timers do nothing.
	gen: count &default=0;
};

# One batch per shard.
global batches: vector of Batch;

# Whether the collection event group is on.
global collecting = T;

## Scheduled flush of one shard's batch.
global flush_due: event(shard: count, gen: count);

# Results need the id and start of connections that may be gone by then;
# bounded by Multa::result_timeout.
type InFlight: record {
	id: conn_id;
	ts: time;
	packets: count;
};

global inflight_expired: function(t: table[string] of InFlight, uid: string): interval;

global inflight: table[string] of InFlight
	&create_expire=result_timeout &expire_func=inflight_expired;

# Set by the offline mode (trace.zeek) while it waits for results: the
# network clock jumps to wall-clock time after a trace, which would expire
# every entry at once.
global hold_inflight = F;

function inflight_expired(t: table[string] of InFlight, uid: string): interval
	{
	if ( hold_inflight )
		return result_timeout;

	count_dropped("result_timeout");
	return 0 secs;
	}

global emit: function(s: State, reason: string);

# How often a pending connection is looked at for Multa::max_age.
function pending_check_interval(): interval
	{
	return max_age > 0 secs ? max_age : 1 hr;
	}

global pending_expired: function(t: table[string] of State, uid: string): interval;

## Connections with collection state that were not emitted yet, by uid.
## Entries leave at emission or connection end; expiry only drives
## Multa::max_age.
global pending: table[string] of State
	&create_expire=pending_check_interval() &expire_func=pending_expired;

function pending_expired(t: table[string] of State, uid: string): interval
	{
	local s = t[uid];

	if ( s$emitted )
		return 0 secs;

	if ( max_age == 0 secs || |s$sizes| < min_packets || ! collecting )
		return pending_check_interval();

	emit(s, "age");
	return 0 secs;
	}

function shard_topic(shard: count): string
	{
	if ( shards == 1 )
		return flow_topic;

	return fmt("%s/%d-of-%d", flow_topic, shard, shards);
	}

function publish_batch(shard: count)
	{
	local b = batches[shard];

	if ( |b$flows| == 0 )
		return;

	if ( ! Cluster::publish(shard_topic(shard), Multa::flows, node_name(), b$flows) )
		{
		Reporter::warning(fmt("multa: could not publish %d flows on %s",
		    |b$flows|, shard_topic(shard)));
		Telemetry::counter_family_inc(dropped_cf, vector("publish_failed"), |b$flows| + 0.0);
		}

	b$flows = vector();
	++b$gen;
	}

event flush_due(shard: count, gen: count)
	{
	if ( batches[shard]$gen == gen )
		publish_batch(shard);
	}

function flush_batches()
	{
	for ( shard in batches )
		publish_batch(shard);
	}

function enqueue(f: Flow)
	{
	local shard = shards == 1 ? 0 : fnv1a32(f$uid) % shards;
	local b = batches[shard];
	b$flows += f;

	if ( |b$flows| >= batch_size )
		publish_batch(shard);
	else if ( |b$flows| == 1 )
		schedule batch_interval { flush_due(shard, b$gen) };
	}

function emit(s: State, reason: string)
	{
	s$stopped = T;
	s$emitted = T;
	delete pending[s$uid];

	local f = Flow($uid=s$uid, $orig_h=s$id$orig_h, $orig_p=s$id$orig_p,
	    $resp_h=s$id$resp_h, $resp_p=s$id$resp_p, $ts=s$ts,
	    $sizes=s$sizes, $dirs=s$dirs, $iats=s$iats);

	if ( ! hook flow_policy(f) )
		return;

	inflight[s$uid] = InFlight($id=s$id, $ts=s$ts, $packets=|s$sizes|);
	Telemetry::counter_family_inc(flows_cf, vector(reason));
	enqueue(f);
	}

function flush_all(reason: string)
	{
	# emit() deletes from pending: pick first, emit after.
	local due: vector of State;

	for ( _, s in pending )
		{
		if ( ! s$emitted && |s$sizes| >= min_packets )
			due += s;
		}

	for ( _, s in due )
		emit(s, reason);

	flush_batches();
	}

function anomaly(c: connection, name: string, addl: string)
	{
	Reporter::conn_weird(name, c, addl, "multa");
	count_dropped(name);
	}

# Zeek flipped originator and responder after we recorded directions.
function reorient(s: State)
	{
	for ( i, d in s$dirs )
		s$dirs[i] = ! d;

	local tmp = s$orig_pkts;
	s$orig_pkts = s$resp_pkts;
	s$resp_pkts = tmp;
	s$orig_h = s$id$orig_h;
	s$orig_p = s$id$orig_p;
	}

function clamp_size(c: connection, size: count): count
	{
	if ( size < 20 )
		{
		anomaly(c, "multa_packet_size_out_of_range", cat(size));
		return 20;
		}

	if ( size > 65535 )
		{
		anomaly(c, "multa_packet_size_out_of_range", cat(size));
		return 65535;
		}

	return size;
	}

function start_flow(c: connection)
	{
	# Only TCP, UDP and ICMP flows are in the model's representation.
	if ( get_port_transport_proto(c$id$orig_p) == unknown_transport )
		return;

	local op = c$orig$num_pkts;
	local rp = c$resp$num_pkts;

	if ( op + rp != 1 )
		{
		# The first event saw more than one packet: the sequence would not
		# start at the first packet, so this connection is not collected.
		anomaly(c, "multa_packet_gap", fmt("first event after %d packets", op + rp));
		return;
		}

	local bytes = c$orig$num_bytes_ip + c$resp$num_bytes_ip;
	local now = network_time();
	local s = State($id=c$id, $uid=c$uid, $ts=now, $last_ts=now,
	    $sizes=vector(clamp_size(c, bytes)), $dirs=vector(op == 1), $iats=vector(0),
	    $orig_h=c$id$orig_h, $orig_p=c$id$orig_p,
	    $orig_pkts=op, $resp_pkts=rp, $bytes_ip=bytes);
	c$multa = s;
	pending[c$uid] = s;

	if ( max_packets == 1 )
		emit(s, "full");
	}

function add_packet(c: connection, s: State)
	{
	if ( c$id$orig_p != s$orig_p || c$id$orig_h != s$orig_h )
		reorient(s);

	local op = c$orig$num_pkts;
	local rp = c$resp$num_pkts;
	local is_orig: bool;

	if ( op == s$orig_pkts + 1 && rp == s$resp_pkts )
		is_orig = T;
	else if ( rp == s$resp_pkts + 1 && op == s$orig_pkts )
		is_orig = F;
	else if ( op == s$orig_pkts && rp == s$resp_pkts )
		{
		# An event without a new packet: nothing to record.
		anomaly(c, "multa_no_new_packet", "");
		return;
		}
	else
		{
		# Several packets (or a counter going back) between two events:
		# keep the exact prefix we have and stop here.
		anomaly(c, "multa_packet_gap", fmt("%d/%d -> %d/%d packets",
		    s$orig_pkts, s$resp_pkts, op, rp));
		s$stopped = T;
		return;
		}

	local bytes = c$orig$num_bytes_ip + c$resp$num_bytes_ip;

	if ( bytes < s$bytes_ip )
		{
		anomaly(c, "multa_packet_gap", "byte counter went back");
		s$stopped = T;
		return;
		}

	local now = network_time();
	local iat = 0;

	if ( now > s$last_ts )
		iat = double_to_count(interval_to_double(now - s$last_ts) * 1000000.0);
	else if ( now < s$last_ts )
		anomaly(c, "multa_time_went_back", "");

	s$sizes += clamp_size(c, bytes - s$bytes_ip);
	s$dirs += is_orig;
	s$iats += iat;
	s$orig_pkts = op;
	s$resp_pkts = rp;
	s$bytes_ip = bytes;
	s$last_ts = now;

	if ( |s$sizes| >= max_packets )
		emit(s, "full");
	}

event conn_generic_packet_threshold_crossed(c: connection, threshold: count) &group="multa-collect"
	{
	if ( threshold > max_packets )
		return;

	if ( threshold == 1 )
		{
		start_flow(c);
		return;
		}

	# Absent when collection was paused at the first packet.
	if ( ! c?$multa )
		return;

	local s = c$multa;

	if ( ! s$stopped )
		add_packet(c, s);
	}

event connection_state_remove(c: connection)
	{
	if ( ! c?$multa )
		return;

	local s = c$multa;

	if ( s$emitted )
		return;

	delete pending[c$uid];

	if ( |s$sizes| >= min_packets && collecting )
		emit(s, "end");
	}

function is_collecting(): bool
	{
	return collecting;
	}

## Turns per-packet collection on or off.
function set_collecting(on: bool)
	{
	if ( on == collecting )
		return;

	collecting = on;

	if ( on )
		enable_event_group("multa-collect");
	else
		disable_event_group("multa-collect");
	}

event zeek_init() &priority=4
	{
	local i = 0;
	while ( i < shards )
		{
		batches += Batch($flows=vector());
		++i;
		}
	}
