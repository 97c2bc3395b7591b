##! multa's script collector: per-connection packet collection in script
##! land, loaded where the Multa::Collector plugin does not collect (see
##! :zeek:see:`Multa::plugin_collects`).
##!
##! Zeek's ConnSize analyzer raises
##! :zeek:see:`conn_generic_packet_threshold_crossed` once for each total
##! packet count in :zeek:see:`ConnThreshold::generic_packet_thresholds`,
##! right after the packet that reached it. Registering 1..max_packets
##! gives one event per packet for the first packets of every connection
##! and none after, so this script never handles :zeek:see:`new_packet`. In
##! each event, the side whose ``num_bytes_ip`` went up sent the packet, the
##! rise is its IP length, and the packet's own timestamp gives the gap to
##! the previous one. A packet after which neither side grew ends the flow
##! before it; a flow that missed packet events (collection paused in
##! between) is not sent, which emission checks once per flow rather than
##! the handler once per packet.

@load base/protocols/conn
@load ./main
@load ./collect

module Multa;

# One event per packet for the first max_packets packets. Registering the
# largest legal N (64) instead would let a later redef of max_packets
# work alone, but costs an event per packet up to 64 for every long
# connection.
redef ConnThreshold::generic_packet_thresholds += packet_thresholds(max_packets);

# Bumped whenever collection pauses or resumes.
global collect_epoch = 0;

global emit: function(s: State, live: bool);
global complete: function(s: State, npkts: count): bool;

# Whether open connections wait in `pending`: only while something needs
# them before they end (Multa::max_age, the offline mode).
function keeps_pending(): bool
	{
	return max_age > 0 secs || offline_wait_for_bridge;
	}

# Whether s's flow is settled: sent, or given up.
function settled(s: State): bool
	{
	return s$sent || s$given_up;
	}

# Whether s's flow is to be sent now: not settled yet, at least
# Multa::min_packets packets, and complete (*npkts* as for complete()).
function ready_to_send(s: State, npkts: count): bool
	{
	return ! settled(s) && |s$sizes| >= min_packets && complete(s, npkts);
	}

# How often a pending connection is looked at for Multa::max_age.
function pending_check_interval(): interval
	{
	return max_age > 0 secs ? max_age : 1 hr;
	}

function pending_expired(t: table[string] of State, uid: string): interval
	{
	local s = t[uid];

	if ( settled(s) )
		return 0 secs;

	if ( max_age == 0 secs || |s$sizes| < min_packets || ! collecting )
		return pending_check_interval();

	if ( complete(s, 0) )
		emit(s, T);
	else
		s$given_up = T;

	return 0 secs;
	}

# Connections that are collecting and not settled yet, by uid; only kept
# while keeps_pending(). Entries leave at emission or connection end;
# expiry drives Multa::max_age.
global pending: table[string] of State
	&create_expire=pending_check_interval() &expire_func=pending_expired;

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

# Sends s's flow; the caller checked complete(). With *live*, the
# connection goes on (Multa::max_age, flush_all()): the state stays,
# marked as sent, with fresh sequences. Otherwise the caller removes
# c$multa.
function emit(s: State, live: bool)
	{
	s$sent = T;

	if ( keeps_pending() )
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

function flush_open_flows()
	{
	# emit() deletes from pending: pick first, emit after.
	local due: vector of State;

	for ( _, s in pending )
		{
		if ( ready_to_send(s, 0) )
			due += s;
		}

	for ( _, s in due )
		emit(s, T);
	}

function switch_collector(on: bool)
	{
	++collect_epoch;

	if ( on )
		enable_event_group("multa-collect");
	else
		disable_event_group("multa-collect");
	}

# Ends collection before the current packet: sends the exact prefix
# collected so far when it is long enough.
function stop_flow(c: connection, s: State, what: string)
	{
	Reporter::conn_weird("multa_packet_gap", c, what, "multa");
	count_dropped("multa_packet_gap");

	if ( ready_to_send(s, 0) )
		emit(s, F);
	else if ( keeps_pending() )
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

		if ( keeps_pending() )
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
		# No Multa::min_packets check: it may exceed max_packets.
		if ( ! settled(s) && complete(s, threshold) )
			emit(s, F);

		delete c$multa;
		}
	}

# Zeek swapped originator and responder: so do the flow and its counters.
event connection_flipped(c: connection)
	{
	if ( ! c?$multa || settled(c$multa) )
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

	if ( settled(s) )
		return;

	if ( keeps_pending() )
		delete pending[c$uid];

	if ( collecting && ready_to_send(s, c$orig$num_pkts + c$resp$num_pkts) )
		emit(s, F);
	}

event zeek_init() &priority=4
	{
	local i = 1;
	while ( i <= max_packets )
		{
		if ( i !in ConnThreshold::generic_packet_thresholds )
			Reporter::fatal(fmt("Multa::max_packets is %d, but Zeek counts packets for it only up to %d: with a redef of Multa::max_packets after loading multa, also redef ConnThreshold::generic_packet_thresholds += Multa::packet_thresholds(%d);",
			    max_packets, i - 1, max_packets));
		++i;
		}
	}
