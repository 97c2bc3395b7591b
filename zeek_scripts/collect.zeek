##! Per-connection packet collection and flow emission.
##!
##! Zeek's ConnSize analyzer raises
##! :zeek:see:`conn_generic_packet_threshold_crossed` once for each total
##! packet count in :zeek:see:`ConnThreshold::generic_packet_thresholds`,
##! right after the packet that reached it. Registering 1..64 gives one
##! event per packet for the first 64 packets of every connection and none
##! after, so this script never handles :zeek:see:`new_packet`. In each
##! event, the side whose ``num_bytes_ip`` went up sent the packet, the rise
##! is its IP length, and the packet's own timestamp gives the gap to the
##! previous one. A packet after which neither side grew ends the flow
##! before it; a flow that missed packet events (collection paused in
##! between) is not sent, which emission checks once per flow rather than
##! the handler once per packet.
##!
##! Where the optional Multa::Collector plugin (zeek_plugin/) is loaded,
##! its C++ collector does the per-packet part instead, with the same
##! semantics, and hands each flow over once (:zeek:see:`Multa::collected`);
##! see :zeek:see:`Multa::plugin_collects`.
##!
##! A connection is emitted exactly once: when it reaches
##! :zeek:see:`Multa::max_packets`, when it ends with at least
##! :zeek:see:`Multa::min_packets`, or at :zeek:see:`Multa::max_age`.
##! Queued flows leave in batches (:zeek:see:`Multa::batch_size`,
##! :zeek:see:`Multa::batch_interval`).

@load base/protocols/conn
@load ./main

module Multa;

export {
	## Per-connection collection state.
	type State: record {
		## The flow's uid, endpoints and first packet time; the
		## sequences join it at emission.
		flow: Flow;
		## The sequences so far (see :zeek:type:`Multa::Flow`).
		sizes: vector of count;
		dirs: vector of bool;
		iats: vector of count;
		## Timestamp of the latest packet.
		last_ts: time;
		## Originator's and responder's IP bytes after the latest packet.
		ob: count;
		rb: count;
		## The collection epoch at the first packet: when it changed
		## before emission, packet events may be missing.
		epoch: count;
		## Queued for the bridge, or left out for good.
		emitted: bool &default=F;
	};

	## Emits every pending connection that has
	## :zeek:see:`Multa::min_packets`, then publishes every batch.
	## The offline mode calls it at the end of the trace. Open
	## connections are tracked only while :zeek:see:`Multa::max_age` is
	## set or in the offline mode.
	global flush_all: function(reason: string);

	## Publishes queued flows now.
	global flush_batches: function();

	## Whether per-packet collection is on (see
	## :zeek:see:`Multa::pause_without_bridge`).
	global is_collecting: function(): bool;

	## The topic of flow shard *shard* (0-based).
	global shard_topic: function(shard: count): string;

	## The set {1, ..., n}, for
	## :zeek:see:`ConnThreshold::generic_packet_thresholds`.
	global packet_thresholds: function(n: count): set[count];

	## Whether the C++ collector of the Multa::Collector plugin
	## (zeek_plugin/) collects: T where the plugin is loaded, unless the
	## environment variable ``MULTA_COLLECTOR=scripts`` keeps this
	## script's collector (a choice made when the scripts are parsed).
	## The plugin records the packets with the same semantics in C++ and
	## raises :zeek:see:`Multa::collected` once per flow, so no script
	## runs per packet.
@ifdef ( Multa::collector_start )
	const plugin_collects = getenv("MULTA_COLLECTOR") != "scripts";
@else
	const plugin_collects = F;
@endif

	## Raised by the plugin's collector for each flow to be sent.
	global collected: event(f: Flow);
}

redef record connection += {
	## multa's collection state; absent for connections whose first
	## packet arrived while collection was paused.
	multa: State &optional;
};

function packet_thresholds(n: count): set[count]
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

@if ( ! plugin_collects )
# One event per packet for the first max_packets packets. Registering the
# largest legal N (64) instead would let a later redef of max_packets
# work alone, but costs an event per packet up to 64 for every long
# connection.
redef ConnThreshold::generic_packet_thresholds += packet_thresholds(max_packets);
@endif

type Batch: record {
	flows: vector of Flow;
	## Bumped on every publish so that stale flush timers do nothing.
	gen: count &default=0;
};

# One batch per shard.
global batches: vector of Batch;

# Whether the collection event group is on.
global collecting = T;

# Bumped whenever collection pauses or resumes.
global collect_epoch = 0;

## Scheduled flush of one shard's batch.
global flush_due: event(shard: count, gen: count);

# Set by the offline mode (trace.zeek) while it waits for results: the
# network clock jumps to wall-clock time after a trace, which would expire
# every entry at once.
global hold_inflight = F;

# Zeek evaluates the expiry expression once per expiry round, not per
# entry: holding by a huge timeout costs nothing per flow, where an
# &expire_func would be a script call for every flow sent.
function inflight_timeout(): interval
	{
	return hold_inflight ? 36500 days : result_timeout;
	}

# Flows sent and waiting for their result, by uid: results need the
# endpoints and start of connections that may be gone by then. Bounded by
# Multa::result_timeout.
global inflight: table[string] of Flow &create_expire=inflight_timeout();

global emit: function(s: State, live: bool);
global send: function(f: Flow);
global complete: function(s: State, npkts: count): bool;

# How often a pending connection is looked at for Multa::max_age.
function pending_check_interval(): interval
	{
	return max_age > 0 secs ? max_age : 1 hr;
	}

function pending_expired(t: table[string] of State, uid: string): interval
	{
	local s = t[uid];

	if ( s$emitted )
		return 0 secs;

	if ( max_age == 0 secs || |s$sizes| < min_packets || ! collecting )
		return pending_check_interval();

	if ( complete(s, 0) )
		emit(s, T);
	else
		s$emitted = T;

	return 0 secs;
	}

## Connections that are collecting and not emitted yet, by uid; only kept
## when something needs them before the connection ends (max_age, the
## offline mode). Entries leave at emission or connection end; expiry
## drives Multa::max_age.
global pending: table[string] of State
	&create_expire=pending_check_interval() &expire_func=pending_expired;

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
		count_dropped("publish_failed", |b$flows|);
		}
	else
		{
		Telemetry::counter_inc(flows_counter, |b$flows| + 0.0);
		Telemetry::counter_inc(batches_counter);
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

# Whether s holds every packet of its connection from the first one, one
# event each: no pause of collection since its first packet and, where
# known, as many packets as Zeek counted (*npkts*, 0: unknown). A flow
# that fails is not sent.
function complete(s: State, npkts: count): bool
	{
	local why = "";

	if ( s$epoch != collect_epoch )
		why = "collection paused meanwhile";
	else if ( npkts != 0 && |s$sizes| != npkts )
		why = fmt("%d packet events for %d packets", |s$sizes|, npkts);
	else
		return T;

	Reporter::flow_weird("multa_packet_gap", s$flow$orig_h, s$flow$resp_h,
	    fmt("%s: %s", s$flow$uid, why), "multa");
	count_dropped("multa_packet_gap");
	return F;
	}

# IPv6 packets can be longer than the representation's 65535 (payload
# length + 40); IPv4 ones cannot, and Zeek drops shorter than their
# header. Checked per flow, not per packet.
function clamp_sizes(f: Flow)
	{
	if ( ! is_v6_addr(f$orig_h) )
		return;

	for ( i, size in f$sizes )
		{
		if ( size > 65535 )
			{
			Reporter::flow_weird("multa_packet_size_out_of_range", f$orig_h, f$resp_h,
			    fmt("%s: %d", f$uid, size), "multa");
			count_dropped("multa_packet_size_out_of_range");
			f$sizes[i] = 65535;
			}
		}
	}

# Sends s's flow; the caller checked complete(). With *live*, the
# connection goes on (Multa::max_age, flush_all()): the state stays,
# marked as emitted, with fresh sequences. Otherwise the caller removes
# c$multa.
function emit(s: State, live: bool)
	{
	s$emitted = T;

	if ( max_age > 0 secs || offline_wait_for_bridge )
		delete pending[s$flow$uid];

	local f = s$flow;
	f$sizes = s$sizes;
	f$dirs = s$dirs;
	f$iats = s$iats;

	if ( live )
		{
		s$sizes = vector();
		s$dirs = vector();
		s$iats = vector();
		}

	if ( |f$sizes| > 0 )
		send(f);
	}

# Clamps, asks flow_policy, and queues f for the bridge.
function send(f: Flow)
	{
	clamp_sizes(f);

	if ( ! hook flow_policy(f) )
		return;

	inflight[f$uid] = f;

	# enqueue(), inlined: this runs for every flow.
	local shard = shards == 1 ? 0 : fnv1a32(f$uid) % shards;
	local b = batches[shard];
	b$flows += f;

	if ( |b$flows| >= batch_size )
		publish_batch(shard);
	else if ( |b$flows| == 1 )
		schedule batch_interval { flush_due(shard, b$gen) };
	}

function flush_all(reason: string)
	{
@if ( plugin_collects )
	for ( _, f in collector_flush(0 secs) as vector of Flow )
		send(f);
@endif

	# emit() deletes from pending: pick first, emit after.
	local due: vector of State;

	for ( _, s in pending )
		{
		if ( ! s$emitted && |s$sizes| >= min_packets && complete(s, 0) )
			due += s;
		}

	for ( _, s in due )
		emit(s, T);

	flush_batches();
	}

@if ( ! plugin_collects )
# Ends collection before the current packet: sends the exact prefix
# collected so far when it is long enough.
function stop_flow(c: connection, s: State, what: string)
	{
	Reporter::conn_weird("multa_packet_gap", c, what, "multa");
	count_dropped("multa_packet_gap");

	if ( ! s$emitted && |s$sizes| >= min_packets && complete(s, 0) )
		emit(s, F);
	else if ( max_age > 0 secs || offline_wait_for_bridge )
		delete pending[c$uid];

	delete c$multa;
	}

# Kept lean: this runs for each of the first max_packets packets of every
# connection. c$multa exists from the first packet until the flow is sent
# or collection stops, so later threshold events (other scripts may
# register more) find it absent.
event conn_generic_packet_threshold_crossed(c: connection, threshold: count) &group="multa-collect"
	{
	if ( ! c?$multa )
		{
		# Absent too when collection was paused at the first packet.
		if ( threshold != 1 )
			return;

		# The first packet: sets up c$multa (inlined: once per
		# connection, but the worst case has two packets per connection).
		# Only TCP, UDP and ICMP flows are in the model's representation.
		if ( get_port_transport_proto(c$id$orig_p) == unknown_transport )
			return;

		if ( c$orig$num_pkts + c$resp$num_pkts != 1 )
			{
			# The first event came after more than one packet: the
			# sequence would not start at the first packet.
			Reporter::conn_weird("multa_packet_gap", c, "first event after several packets", "multa");
			count_dropped("multa_packet_gap");
			return;
			}

		local ob1 = c$orig$num_bytes_ip;
		local size1 = ob1 + c$resp$num_bytes_ip;

		if ( size1 < 20 || size1 > 65535 )
			{
			Reporter::conn_weird("multa_packet_size_out_of_range", c, cat(size1), "multa");
			count_dropped("multa_packet_size_out_of_range");
			size1 = size1 < 20 ? 20 : 65535;
			}

		local t1 = get_current_packet_ts();
		local id = c$id;
		local s1 = State($flow=Flow($uid=c$uid, $orig_h=id$orig_h, $orig_p=id$orig_p,
		    $resp_h=id$resp_h, $resp_p=id$resp_p, $ts=t1,
		    $sizes=vector(), $dirs=vector(), $iats=vector()),
		    $sizes=vector(size1), $dirs=vector(ob1 > 0), $iats=vector(0),
		    $last_ts=t1, $ob=ob1, $rb=c$resp$num_bytes_ip, $epoch=collect_epoch);

		if ( max_packets == 1 )
			{
			emit(s1, F);
			return;
			}

		c$multa = s1;

		if ( max_age > 0 secs || offline_wait_for_bridge )
			pending[c$uid] = s1;

		return;
		}

	# Per packet, the fewest statements that can do: whether events were
	# missed is checked once per flow, by complete(); only the responder's
	# branch checks that a counter rose (ConnSize adds a packet's count
	# and bytes to one side, and exactly one packet lies between two
	# events); IPv4 sizes are in range by construction (clamp_sizes()).
	local s = c$multa;
	local ob = c$orig$num_bytes_ip;

	if ( ob != s$ob )
		{
		s$dirs += T;
		s$sizes += ob - s$ob;
		s$ob = ob;
		}
	else
		{
		local rb = c$resp$num_bytes_ip;

		if ( rb == s$rb )
			{
			stop_flow(c, s, fmt("packet %d: byte counters %d/%d unchanged", threshold,
			    ob, rb));
			return;
			}

		s$dirs += F;
		s$sizes += rb - s$rb;
		s$rb = rb;
		}

	# The packet's own timestamp: network_time() never goes back, so with
	# out-of-order timestamps it is not the packet's time.
	local t = get_current_packet_ts();

	if ( t >= s$last_ts )
		s$iats += double_to_count((t - s$last_ts) / 1 usec);
	else
		{
		Reporter::conn_weird("multa_time_went_back", c, "", "multa");
		count_dropped("multa_time_went_back");
		s$iats += 0;
		}

	s$last_ts = t;

	if ( threshold >= max_packets )
		{
		if ( ! s$emitted && complete(s, threshold) )
			emit(s, F);

		delete c$multa;
		}
	}

# Zeek swapped originator and responder: so do the flow and its counters.
event connection_flipped(c: connection)
	{
	if ( ! c?$multa || c$multa$emitted )
		return;

	local s = c$multa;
	local f = s$flow;

	for ( i, d in s$dirs )
		s$dirs[i] = ! d;

	f$orig_h = c$id$orig_h;
	f$orig_p = c$id$orig_p;
	f$resp_h = c$id$resp_h;
	f$resp_p = c$id$resp_p;

	local tmp = s$ob;
	s$ob = s$rb;
	s$rb = tmp;
	}

event connection_state_remove(c: connection)
	{
	if ( ! c?$multa )
		return;

	local s = c$multa;

	if ( s$emitted )
		return;

	if ( max_age > 0 secs || offline_wait_for_bridge )
		delete pending[c$uid];

	if ( |s$sizes| >= min_packets && collecting
	     && complete(s, c$orig$num_pkts + c$resp$num_pkts) )
		emit(s, F);
	}
@else
event Multa::collected(f: Flow)
	{
	send(f);
	}

# How often the collector is asked for flows older than Multa::max_age:
# at most 10 s late, like the expiry of `pending` in the threshold path.
function collector_check_interval(): interval
	{
	return max_age > 0 secs && max_age < 10 secs ? max_age : 10 secs;
	}

# Multa::max_age: hands over flows at least that old (the threshold path
# keeps them in `pending`, whose expiry does this).
event collector_age_check()
	{
	if ( max_age > 0 secs )
		{
		for ( _, f in collector_flush(max_age) as vector of Flow )
			send(f);
		}

	schedule collector_check_interval() { collector_age_check() };
	}
@endif

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
	++collect_epoch;

@if ( plugin_collects )
	collector_set_enabled(on);
@else
	if ( on )
		enable_event_group("multa-collect");
	else
		disable_event_group("multa-collect");
@endif
	}

event zeek_init() &priority=4
	{
	while ( |batches| < shards )
		batches += Batch($flows=vector());

@if ( plugin_collects )
	collector_start(max_packets);
	collector_set_enabled(collecting);
	schedule collector_check_interval() { collector_age_check() };
@else
	local i = 1;
	while ( i <= max_packets )
		{
		if ( i !in ConnThreshold::generic_packet_thresholds )
			Reporter::fatal(fmt("Multa::max_packets is %d, but Zeek counts packets for it only up to %d: with a redef of Multa::max_packets after loading multa, also redef ConnThreshold::generic_packet_thresholds += Multa::packet_thresholds(%d);",
			    max_packets, i - 1, max_packets));
		++i;
		}
@endif
	}

# Connections still open when Zeek stops are removed, and their flows
# queued, before zeek_done; no batch timer fires after it, so the last
# batches leave here rather than being lost uncounted.
event zeek_done()
	{
	flush_batches();
	}
