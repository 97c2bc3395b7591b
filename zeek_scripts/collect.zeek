##! Flow emission, shared by multa's two collectors: batches per shard,
##! flows in flight, and pausing collection.
##!
##! One collector records the first :zeek:see:`Multa::max_packets` packets
##! of every connection; ``__load__.zeek`` loads one of them after this
##! script: ``collect-plugin.zeek`` where the optional Multa::Collector
##! plugin (zeek_plugin/) collects in C++ (see
##! :zeek:see:`Multa::plugin_collects`), ``collect-scripts.zeek``
##! otherwise. Both have the same semantics.
##!
##! A connection is emitted exactly once: when it reaches
##! :zeek:see:`Multa::max_packets`, when it ends with at least
##! :zeek:see:`Multa::min_packets`, or at :zeek:see:`Multa::max_age`.
##! Queued flows leave in batches (:zeek:see:`Multa::batch_size`,
##! :zeek:see:`Multa::batch_interval`).

@load base/protocols/conn
@load ./main
@load ./context

module Multa;

export {
	## Per-connection collection state of the script collector
	## (the C++ collector keeps its own).
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
		## Queued for the bridge. With :zeek:see:`Multa::max_age` or
		## :zeek:see:`Multa::flush_all` the connection goes on, with
		## fresh sequences that are never sent.
		sent: bool &default=F;
		## Left out for good: incomplete when
		## :zeek:see:`Multa::max_age` came.
		given_up: bool &default=F;
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
	## package's script collector (a choice made when the scripts are
	## parsed). The plugin records the packets with the same semantics in
	## C++ and raises :zeek:see:`Multa::collected` once per flow, so no
	## script runs per packet.
@ifdef ( Multa::collector_start )
	const plugin_collects = getenv("MULTA_COLLECTOR") != "scripts";
@else
	const plugin_collects = F;
@endif
}

redef record connection += {
	## The script collector's state, from the first packet until the
	## flow is sent or collection stops; absent for connections whose
	## first packet arrived while collection was paused, and with the
	## C++ collector.
	multa: State &optional;
};

# Defined by the collector that __load__.zeek loads (collect-scripts.zeek
# or collect-plugin.zeek).

# Sends every open flow with Multa::min_packets now (flush_all()).
global flush_open_flows: function();

# Starts or stops the collector's per-packet work (set_collecting()).
global switch_collector: function(on: bool);

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

type Batch: record {
	flows: vector of Flow;
	# The same in the packed encoding (Multa::flow_encoding).
	packed: vector of PackedFlow;
	# Bumped on every publish so that stale flush timers do nothing.
	gen: count &default=0;
};

# One batch per shard.
global batches: vector of Batch;

# Whether collection is on.
global collecting = T;

# Scheduled flush of one shard's batch.
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

function shard_topic(shard: count): string
	{
	if ( shards == 1 )
		return flow_topic;

	return fmt("%s/%d-of-%d", flow_topic, shard, shards);
	}

function published(shard: count, n: count, ok: bool)
	{
	if ( ok )
		{
		Telemetry::counter_inc(flows_counter, n + 0.0);
		Telemetry::counter_inc(batches_counter);
		return;
		}

	Reporter::warning(fmt("multa: could not publish %d flows on %s", n, shard_topic(shard)));
	count_dropped("publish_failed", n);
	}

function publish_batch(shard: count)
	{
	local b = batches[shard];

	# Both vectors hold flows only after Multa::flow_encoding changed.
	if ( |b$packed| > 0 )
		{
		published(shard, |b$packed|, Cluster::publish(shard_topic(shard),
		    Multa::packed_flows, node_name(), PACKED_VERSION, b$packed));
		b$packed = vector();
		}

	if ( |b$flows| > 0 )
		{
		published(shard, |b$flows|, Cluster::publish(shard_topic(shard),
		    Multa::flows, node_name(), b$flows));
		b$flows = vector();
		}

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

# f in the packed encoding (Multa::PackedFlow). Where the Multa::Collector
# plugin is loaded, its BIF renders the same string in C++.
function pack_flow(f: Flow): PackedFlow
	{
@ifdef ( Multa::pack_sequences )
	local packed = pack_sequences(f);
@else
	local packed = f?$ctx ? cat_sep("|", "", f$sizes, f$dirs, f$iats, f$ctx)
	    : cat_sep("|", "", f$sizes, f$dirs, f$iats);
@endif
	return PackedFlow($uid=f$uid, $orig_h=f$orig_h, $orig_p=f$orig_p, $resp_h=f$resp_h,
	    $resp_p=f$resp_p, $ts=f$ts, $packed=packed);
	}

# Clamps, asks flow_policy, and queues f for the bridge. Both collectors
# hand every flow they emit to it.
function send(f: Flow)
	{
	clamp_sizes(f);

	# The host context from the connection's start (context.zeek).
	if ( f$uid in flow_context )
		{
		f$ctx = flow_context[f$uid];
		delete flow_context[f$uid];
		}

	if ( ! hook flow_policy(f) )
		return;

	inflight[f$uid] = f;

	# enqueue(), inlined: this runs for every flow.
	local shard = shards == 1 ? 0 : fnv1a32(f$uid) % shards;
	local b = batches[shard];

	if ( flow_encoding == PACKED )
		b$packed += pack_flow(f);
	else
		b$flows += f;

	local n = |b$packed| + |b$flows|;

	if ( n >= batch_size )
		publish_batch(shard);
	else if ( n == 1 )
		schedule batch_interval { flush_due(shard, b$gen) };
	}

function flush_all(reason: string)
	{
	flush_open_flows();
	flush_batches();
	}

function is_collecting(): bool
	{
	return collecting;
	}

# Turns per-packet collection on or off (transport.zeek).
function set_collecting(on: bool)
	{
	if ( on == collecting )
		return;

	collecting = on;
	switch_collector(on);
	}

event zeek_init() &priority=4
	{
	while ( |batches| < shards )
		batches += Batch($flows=vector(), $packed=vector());
	}

# Connections still open when Zeek stops are removed, and their flows
# queued, before zeek_done; no batch timer fires after it, so the last
# batches leave here rather than being lost uncounted.
event zeek_done()
	{
	flush_batches();
	}
