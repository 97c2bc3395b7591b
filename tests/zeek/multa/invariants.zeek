# @TEST-DOC: On a scan trace with many short connections, every sent flow obeys the representation's rules and agrees with Zeek's own counters.
# @TEST-REQUIRES: test -f "$TRACES/nmap-vsn.pcap"
# @TEST-EXEC: zeek -b -C -r $TRACES/nmap-vsn.pcap $PACKAGE %INPUT > output
# @TEST-EXEC: btest-diff output

redef Multa::pause_without_bridge = F;
redef Multa::max_packets = 8;

global flows: table[string] of Multa::Flow;
global checked = 0;
global complete = 0;
global full = 0;
global problems = 0;

hook Multa::flow_policy(f: Multa::Flow)
	{
	if ( f$uid in flows )
		{
		print "sent twice", f$uid;
		++problems;
		}

	flows[f$uid] = f;
	}

function problem(c: connection, what: string)
	{
	print fmt("%s: %s", c$uid, what);
	++problems;
	}

event connection_state_remove(c: connection) &priority=-10
	{
	if ( c$uid !in flows )
		{
		# Only connections that were never collected may be missing.
		if ( c?$multa )
			problem(c, "collected but not sent");
		return;
		}

	local f = flows[c$uid];
	local n = |f$sizes|;
	local total = c$orig$num_pkts + c$resp$num_pkts;
	++checked;

	if ( n != |f$dirs| || n != |f$iats| )
		problem(c, "vector lengths differ");

	if ( n != (total < Multa::max_packets ? total : Multa::max_packets) )
		problem(c, fmt("%d packets sent of %d", n, total));

	if ( f$iats[0] != 0 )
		problem(c, "first iat not 0");

	local bytes = 0;
	local orig = 0;
	local us = 0;
	for ( i in f$sizes )
		{
		if ( f$sizes[i] < 20 || f$sizes[i] > 65535 )
			problem(c, fmt("size %d", f$sizes[i]));
		bytes += f$sizes[i];
		if ( f$dirs[i] )
			++orig;
		us += f$iats[i];
		}

	if ( n == total )
		{
		++complete;
		if ( bytes != c$orig$num_bytes_ip + c$resp$num_bytes_ip )
			problem(c, "sizes do not sum to the IP bytes");
		if ( orig != c$orig$num_pkts )
			problem(c, "originator packets differ");
		# Sum of gaps is the duration, to rounding.
		local d = interval_to_double(c$duration) * 1000000.0;
		if ( us + n < d || us > d + n )
			problem(c, fmt("iats sum to %d us, duration %.0f us", us, d));
		}
	else
		++full;
	}

event zeek_done()
	{
	print fmt("flows sent: %d, checked at connection end: %d (all packets: %d, first %d only: %d), problems: %d",
	    |flows|, checked, complete, Multa::max_packets, full, problems);
	}
