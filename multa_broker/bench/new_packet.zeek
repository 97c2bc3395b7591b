##! Reference collector for ``multa bench zeek``: the same first-N packet
##! sequences as multa's package, collected the zeek-flowmeter way, by
##! handling :zeek:see:`new_packet` for every packet. Flows leave in the same
##! batched ``Multa::flows`` events. It exists only to measure what the
##! package's threshold-event design saves; do not deploy it.

@load base/frameworks/cluster
@load base/protocols/conn

module MultaBenchRef;

export {
	## Mirrors Multa::Flow (the wire contract) so this script can run alone.
	type Flow: record {
		uid: string;
		orig_h: addr;
		orig_p: port;
		resp_h: addr;
		resp_p: port;
		ts: time;
		sizes: vector of count;
		dirs: vector of bool;
		iats: vector of count;
	};

	const max_packets = 20 &redef;
	const min_packets = 1 &redef;
	const batch_size = 100 &redef;
	const flow_topic = "multa/flows" &redef;

	global flows: event(node: string, flows: vector of Flow);
	## Flows emitted, for checking that the output equals the package's.
	global emitted = 0;
}

type State: record {
	f: Flow;
	last: time;
	done: bool &default=F;
};

redef record connection += {
	multa_ref: State &optional;
};

global batch: vector of Flow;

function publish()
	{
	if ( |batch| == 0 )
		return;

	Cluster::publish(flow_topic, MultaBenchRef::flows, "zeek", batch);
	batch = vector();
	}

function emit(s: State)
	{
	s$done = T;
	++emitted;
	batch += s$f;

	if ( |batch| >= batch_size )
		publish();
	}

event new_packet(c: connection, p: pkt_hdr)
	{
	local size = 0;
	local src: addr;

	if ( p?$ip )
		{
		size = p$ip$len;
		src = p$ip$src;
		}
	else if ( p?$ip6 )
		{
		size = p$ip6$len + 40;
		src = p$ip6$src;
		}
	else
		return;

	local now = network_time();

	if ( ! c?$multa_ref )
		{
		c$multa_ref = State($f=Flow($uid=c$uid, $orig_h=c$id$orig_h, $orig_p=c$id$orig_p,
		    $resp_h=c$id$resp_h, $resp_p=c$id$resp_p, $ts=now,
		    $sizes=vector(size), $dirs=vector(src == c$id$orig_h), $iats=vector(0)),
		    $last=now);
		}
	else
		{
		local s = c$multa_ref;

		if ( s$done )
			return;

		s$f$sizes += size;
		s$f$dirs += src == c$id$orig_h;
		s$f$iats += double_to_count(interval_to_double(now - s$last) * 1000000.0);
		s$last = now;
		}

	if ( |c$multa_ref$f$sizes| >= max_packets )
		emit(c$multa_ref);
	}

event connection_state_remove(c: connection)
	{
	if ( c?$multa_ref && ! c$multa_ref$done && |c$multa_ref$f$sizes| >= min_packets )
		emit(c$multa_ref);
	}

event zeek_done()
	{
	publish();
	}
