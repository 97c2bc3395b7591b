# @TEST-DOC: On traces with scans, brute force, tunnels and ordinary web traffic, every sent flow obeys the representation's rules agrees with Zeek's own counters (packets, IP bytes, originator packets) and equals an independent reference built from new_packet (which the package never uses).
# @TEST-REQUIRES: test -d "$TRACES/ndpi/pcap" && test -d "$TRACES/zeek-traces" && test -d "$TRACES/stratosphere"
# @TEST-EXEC: for t in ndpi/pcap/synscan.pcap stratosphere/test19-malicious-ssh/malicious-ssh-bruteforce.pcap stratosphere/test12-icmp-portscan.pcap zeek-traces/wikipedia.pcap zeek-traces/var-services-std-ports.pcap zeek-traces/tunnels/Teredo.pcap zeek-traces/tunnels/gre-sample.pcap zeek-traces/ipv6-http-atomic-frag.pcap zeek-traces/dns53.pcap zeek-traces/tcp/handshake-reorder.pcap zeek-traces/tcp/missing-syn.pcap zeek-traces/tcp/one-sided-2745.pcap; do echo "$t: $(zeek -b -C -r $TRACES/$t $PACKAGE %INPUT)"; done > output
# @TEST-EXEC: btest-diff output

redef Multa::pause_without_bridge = F;
redef Multa::max_packets = 32;
redef ConnThreshold::generic_packet_thresholds += Multa::packet_thresholds(32);

global flows: table[string] of Multa::Flow;
global checked = 0;
global complete = 0;
global full = 0;
global problems = 0;

# Reference sequences from new_packet: time, IP length, source of each packet.
type Ref: record {
	ts: vector of time;
	sizes: vector of count;
	src_h: vector of addr;
	src_p: vector of port;
};

global refs: table[string] of Ref;

event new_packet(c: connection, p: pkt_hdr)
	{
	if ( c$uid !in refs )
		refs[c$uid] = Ref($ts=vector(), $sizes=vector(), $src_h=vector(), $src_p=vector());

	local r = refs[c$uid];
	if ( |r$ts| >= Multa::max_packets )
		return;

	local sp = 0/unknown;
	if ( p?$tcp )
		sp = p$tcp$sport;
	else if ( p?$udp )
		sp = p$udp$sport;

	r$ts += get_current_packet_ts();
	r$sizes += p?$ip ? p$ip$len : p$ip6$len + 40;
	r$src_h += p?$ip ? p$ip$src : p$ip6$src;
	r$src_p += sp;
	}

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

function compare_reference(c: connection, f: Multa::Flow)
	{
	local r = refs[c$uid];

	if ( |r$sizes| < |f$sizes| )
		{
		problem(c, fmt("%d packets sent, new_packet saw %d", |f$sizes|, |r$sizes|));
		return;
		}

	for ( i in f$sizes )
		{
		# A packet stamped before its predecessor counts as no gap.
		local gap = i == 0 ? 0.0 : interval_to_double(r$ts[i] - r$ts[i - 1]);
		local iat = gap > 0.0 ? double_to_count(gap * 1000000.0) : 0;
		# The final orientation decides the direction (Zeek may flip roles).
		local from_orig = r$src_h[i] == c$id$orig_h
		    && ( r$src_p[i] == 0/unknown || r$src_p[i] == c$id$orig_p );

		if ( f$sizes[i] != r$sizes[i] || f$iats[i] != iat )
			problem(c, fmt("packet %d: size %d iat %d, reference %d %d", i, f$sizes[i],
			    f$iats[i], r$sizes[i], iat));

		if ( c$id$orig_h != c$id$resp_h && f$dirs[i] != from_orig )
			problem(c, fmt("packet %d: direction %s, reference %s", i, f$dirs[i], from_orig));
		}
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
		{
		problem(c, "vector lengths differ");
		return;
		}

	if ( n != (total < Multa::max_packets ? total : Multa::max_packets) )
		problem(c, fmt("%d packets sent of %d", n, total));

	if ( f$iats[0] != 0 )
		problem(c, "first iat not 0");

	if ( f$ts != c$start_time )
		problem(c, "ts is not the connection's start");

	local bytes = 0;
	local orig = 0;
	for ( i in f$sizes )
		{
		if ( f$sizes[i] < 20 || f$sizes[i] > 65535 )
			problem(c, fmt("size %d", f$sizes[i]));
		bytes += f$sizes[i];
		if ( f$dirs[i] )
			++orig;
		}

	if ( n == total )
		{
		++complete;
		if ( bytes != c$orig$num_bytes_ip + c$resp$num_bytes_ip )
			problem(c, "sizes do not sum to the IP bytes");
		if ( orig != c$orig$num_pkts )
			problem(c, "originator packets differ");
		}
	else
		++full;

	compare_reference(c, f);
	}

event zeek_done()
	{
	print fmt("flows sent: %d, checked at connection end: %d (all packets: %d, first %d only: %d), problems: %d",
	    |flows|, checked, complete, Multa::max_packets, full, problems);
	}
