# @TEST-DOC: With max_packets 5 a long connection is sent after its 5th packet, exactly once; the prefix equals the start of the full sequence.
# @TEST-REQUIRES: test -f "$TRACES/zeek-traces/http/get.pcap"
# @TEST-EXEC: zeek -b -r $TRACES/zeek-traces/http/get.pcap $PACKAGE %INPUT > output
# @TEST-EXEC: btest-diff output

redef Multa::pause_without_bridge = F;
redef Multa::max_packets = 5;

global sent = 0;

hook Multa::flow_policy(f: Multa::Flow)
	{
	++sent;
	print fmt("sent at %.6f (first packet %.6f)", network_time(), f$ts);
	print "sizes", f$sizes;
	print "dirs", f$dirs;
	print "iats", f$iats;
	}

event connection_state_remove(c: connection)
	{
	print fmt("connection ended with %d packets; sent %d time(s)",
	    c$orig$num_pkts + c$resp$num_pkts, sent);
	}
