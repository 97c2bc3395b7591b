##! Host context: what the hosts of a connection did just before it started.
##!
##! At each connection's start (:zeek:see:`new_connection`), over the
##! connections that started in the :zeek:see:`Multa::host_context_window`
##! before it (this one left out), six counts, in this order:
##!
##! * connections its originator started;
##! * distinct responder addresses of those;
##! * distinct responder ports (number and transport) of those;
##! * those to this connection's responder endpoint (address and port);
##! * connections to this responder endpoint, from anyone;
##! * distinct originators of those.
##!
##! They travel as the flow's ``ctx`` (:zeek:type:`Multa::Flow`), for both
##! collectors. The one definition is multa_broker/context.py; the offline
##! extractor computes the same numbers. See docs/context.md.

@load ./main

module Multa;

export {
	## Whether flows carry host context (:zeek:type:`Multa::Flow`'s
	## ``ctx``). Turned off, the package tracks no starts and ``ctx`` stays
	## absent; turned back on at run time, it starts from an empty
	## history.
	option host_context = T;

	## How far back host context looks (WINDOW_S in
	## multa_broker/context.py; a model is trained for one value).
	const host_context_window = 60 secs;

	## Starts kept per originator and per responder endpoint, the oldest
	## leaving first; no count exceeds it (MAX_ENTRIES in
	## multa_broker/context.py).
	const host_context_max_entries = 1000;
}

# Recent starts of one originator, oldest first, in a ring of at most
# host_context_max_entries slots from *head*, and how many distinct
# responder addresses and ports they hold.
type OrigStarts: record {
	ts: vector of time;
	resp_h: vector of addr;
	resp_p: vector of port;
	head: count &default=0;
	n: count &default=0;
	newest: time;
	hosts: count &default=0;
	ports: count &default=0;
};

# Recent starts to one responder endpoint, likewise, and how many
# distinct originators they hold.
type RespStarts: record {
	ts: vector of time;
	orig_h: vector of addr;
	head: count &default=0;
	n: count &default=0;
	newest: time;
	origs: count &default=0;
};

# Where the Multa::Collector plugin collects (the same choice as
# Multa::plugin_collects), its C++ tracker (zeek_plugin/src/Context.cc)
# computes the same counts from the same handler, faster.
@ifdef ( Multa::context_start )
const plugin_context = getenv("MULTA_COLLECTOR") != "scripts";
@else
const plugin_context = F;
@endif

# Starts between sweeps (context.ContextTracker.SWEEP_EVERY): sweeping at
# the same starts as the Python side keeps even traces whose timestamps
# go back exactly equal. &redef only so that tests can sweep often.
const SWEEP_EVERY = 65536 &redef;

global orig_starts: table[addr] of OrigStarts;
global resp_starts: table[addr, port] of RespStarts;
global starts_since_sweep = 0;

# Occurrences in the rings, one table per kind rather than tables in every
# record: a host seen once costs no table of its own. By originator and
# responder address, port or endpoint; by endpoint and originator.
global orig_host_n: table[addr, addr] of count &default=0;
global orig_port_n: table[addr, port] of count &default=0;
global orig_ep_n: table[addr, addr, port] of count &default=0;
global resp_orig_n: table[addr, port, addr] of count &default=0;

# Host context by uid, from the connection's start until its flow is sent
# (collect.zeek's send()) or the connection ends.
global flow_context: table[string] of vector of count;

function drop_orig_head(oh: addr, o: OrigStarts)
	{
	local i = o$head;
	local h = o$resp_h[i];
	local p = o$resp_p[i];

	if ( --orig_host_n[oh, h] == 0 )
		{
		delete orig_host_n[oh, h];
		--o$hosts;
		}

	if ( --orig_port_n[oh, p] == 0 )
		{
		delete orig_port_n[oh, p];
		--o$ports;
		}

	if ( --orig_ep_n[oh, h, p] == 0 )
		delete orig_ep_n[oh, h, p];

	o$head = (i + 1) % host_context_max_entries;
	--o$n;
	}

function drop_resp_head(rh: addr, rp: port, r: RespStarts)
	{
	local i = r$head;
	local oh = r$orig_h[i];

	if ( --resp_orig_n[rh, rp, oh] == 0 )
		{
		delete resp_orig_n[rh, rp, oh];
		--r$origs;
		}

	r$head = (i + 1) % host_context_max_entries;
	--r$n;
	}

# Drops the starts at least a window before *t0*, oldest first, stopping
# at the first younger one (the definition's FIFO order).
function expire_orig(oh: addr, o: OrigStarts, t0: time)
	{
	while ( o$n > 0 && t0 - o$ts[o$head] >= host_context_window )
		drop_orig_head(oh, o);

	# An empty ring restarts at slot 0 with empty vectors: a host that
	# comes back rarely holds few slots.
	if ( o$n == 0 && |o$ts| > 0 )
		{
		o$ts = vector();
		o$resp_h = vector();
		o$resp_p = vector();
		o$head = 0;
		}
	}

function expire_resp(rh: addr, rp: port, r: RespStarts, t0: time)
	{
	while ( r$n > 0 && t0 - r$ts[r$head] >= host_context_window )
		drop_resp_head(rh, rp, r);

	if ( r$n == 0 && |r$ts| > 0 )
		{
		r$ts = vector();
		r$orig_h = vector();
		r$head = 0;
		}
	}

# Forgets originators and endpoints whose newest start left the window,
# with their occurrences; no later result changes, as every start they
# hold would expire.
function sweep(now: time)
	{
	starts_since_sweep = 0;

	local stale_origs: vector of addr;
	for ( a, ow in orig_starts )
		{
		if ( now - ow$newest >= host_context_window )
			stale_origs += a;
		}

	for ( _, a in stale_origs )
		{
		local o = orig_starts[a];
		while ( o$n > 0 )
			drop_orig_head(a, o);

		delete orig_starts[a];
		}

	local stale_hosts: vector of addr;
	local stale_ports: vector of port;
	for ( [h, p], rw in resp_starts )
		{
		if ( now - rw$newest >= host_context_window )
			{
			stale_hosts += h;
			stale_ports += p;
			}
		}

	for ( i, h in stale_hosts )
		{
		local rp = stale_ports[i];
		local r = resp_starts[h, rp];
		while ( r$n > 0 )
			drop_resp_head(h, rp, r);

		delete resp_starts[h, rp];
		}
	}

function context_changed(id: string, new_value: bool): bool
	{
	if ( new_value )
		enable_event_group("multa-context");
	else
		{
		disable_event_group("multa-context");
@ifdef ( Multa::context_reset )
		if ( plugin_context )
			context_reset();
@endif
		orig_starts = table();
		resp_starts = table();
		orig_host_n = table();
		orig_port_n = table();
		orig_ep_n = table();
		resp_orig_n = table();
		flow_context = table();
		starts_since_sweep = 0;
		}

	return new_value;
	}

# The only per-connection work: new_connection comes once per connection,
# after its first packet was processed (roles flipped at that packet are
# in c$id already), in the order the connections were created.
event new_connection(c: connection) &group="multa-context"
	{
	local id = c$id;
	local rp = id$resp_p;

	# Only TCP, UDP and ICMP connections are in the representation.
	if ( get_port_transport_proto(rp) == unknown_transport )
		return;

@ifdef ( Multa::context_start )
	if ( plugin_context )
		{
		flow_context[c$uid] = context_start(c$start_time, id$orig_h, id$resp_h, rp);
		return;
		}
@endif

	local t0 = c$start_time;
	local oh = id$orig_h;
	local rh = id$resp_h;
	local o: OrigStarts;
	local r: RespStarts;

	if ( oh in orig_starts )
		{
		o = orig_starts[oh];
		expire_orig(oh, o, t0);
		}
	else
		{
		o = OrigStarts($ts=vector(), $resp_h=vector(), $resp_p=vector(), $newest=t0);
		orig_starts[oh] = o;
		}

	if ( [rh, rp] in resp_starts )
		{
		r = resp_starts[rh, rp];
		expire_resp(rh, rp, r, t0);
		}
	else
		{
		r = RespStarts($ts=vector(), $orig_h=vector(), $newest=t0);
		resp_starts[rh, rp] = r;
		}

	# orig_ep_n's &default gives 0 for an endpoint not in the window.
	flow_context[c$uid] = vector(o$n, o$hosts, o$ports, orig_ep_n[oh, rh, rp], r$n, r$origs);

	# Record this start; a full ring drops its oldest.
	if ( o$n == host_context_max_entries )
		drop_orig_head(oh, o);

	local i = (o$head + o$n) % host_context_max_entries;
	o$ts[i] = t0;
	o$resp_h[i] = rh;
	o$resp_p[i] = rp;
	++o$n;

	if ( t0 > o$newest )
		o$newest = t0;

	if ( ++orig_host_n[oh, rh] == 1 )
		++o$hosts;

	if ( ++orig_port_n[oh, rp] == 1 )
		++o$ports;

	++orig_ep_n[oh, rh, rp];

	if ( r$n == host_context_max_entries )
		drop_resp_head(rh, rp, r);

	i = (r$head + r$n) % host_context_max_entries;
	r$ts[i] = t0;
	r$orig_h[i] = oh;
	++r$n;

	if ( t0 > r$newest )
		r$newest = t0;

	if ( ++resp_orig_n[rh, rp, oh] == 1 )
		++r$origs;

	if ( ++starts_since_sweep >= SWEEP_EVERY )
		sweep(t0);
	}

# A connection whose flow was never sent leaves no context behind. Both
# collectors send a flow at connection end before this runs.
event connection_state_remove(c: connection) &priority=-10 &group="multa-context"
	{
	delete flow_context[c$uid];
	}

event zeek_init()
	{
	Option::set_change_handler("Multa::host_context", context_changed);

	if ( ! host_context )
		disable_event_group("multa-context");
	}
