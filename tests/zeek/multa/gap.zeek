# @TEST-DOC: Collection pauses and resumes (here between two packets of one connection): the package cannot tell which packet events of connections in progress it missed, so those are not sent, each with a multa_packet_gap weird; connections that start after the resume are sent.
# @TEST-REQUIRES: test -f "$TRACES/zeek-traces/wikipedia.pcap"
# @TEST-EXEC: zeek -b -C -r $TRACES/zeek-traces/wikipedia.pcap $PACKAGE %INPUT > output
# @TEST-EXEC: btest-diff output

@load base/frameworks/notice/weird

redef Multa::pause_without_bridge = F;
# The timing below, also where the C++ collector collects (btest -a plugin).
redef ConnThreshold::generic_packet_thresholds += { 4, 5 };

global victim = "";
global gap_weirds: set[string];

event flow_weird(name: string, src: addr, dst: addr, addl: string, source: string)
	{
	if ( name == "multa_packet_gap" )
		add gap_weirds[split_string1(addl, /:/)[0]];
	}
global sent: table[string] of count;

hook Multa::flow_policy(f: Multa::Flow)
	{
	sent[f$uid] = |f$sizes|;
	}

# After the package's handler of packet 4 of the first connection that
# gets that far: pause (no bridge is connected).
event conn_generic_packet_threshold_crossed(c: connection, threshold: count) &priority=-10
	{
	if ( victim == "" && threshold == 4 )
		{
		victim = c$uid;
		Config::set_value("Multa::pause_without_bridge", T);
		}
	}

# Before the package's handler of packet 5 of that connection: resume (the
# C++ collector has skipped packet 5 by then).
event conn_generic_packet_threshold_crossed(c: connection, threshold: count) &priority=10
	{
	if ( c$uid == victim && threshold == 5 )
		Config::set_value("Multa::pause_without_bridge", F);
	}

event zeek_done()
	{
	print fmt("paused connection sent: %s", victim in sent);
	local whole = 0;
	for ( _, n in sent )
		if ( n > 0 )
			++whole;
	print fmt("connections sent: %d", whole);
	print fmt("paused connection's weird: %s", victim in gap_weirds);
	}
