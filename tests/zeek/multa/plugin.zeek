# @TEST-DOC: The C++ collector of the Multa::Collector plugin sends exactly the flows of the scripts' collector (uids, endpoints, first-packet times, sizes, directions, gaps), on the invariants test's traces, with max_packets 32 and the default 20; and the plugin is really the one collecting.
# @TEST-REQUIRES: test -e "$PLUGIN_DIR/__zeek_plugin__"
# @TEST-REQUIRES: test -d "$TRACES/ndpi/pcap" && test -d "$TRACES/zeek-traces" && test -d "$TRACES/stratosphere"
# @TEST-EXEC: bash $SCRIPTS/compare-collectors.sh %INPUT >output
# @TEST-EXEC: btest-diff output

redef Multa::pause_without_bridge = F;
redef ConnThreshold::generic_packet_thresholds += Multa::packet_thresholds(32);

event zeek_init()
	{
	print fmt("collector %s", Multa::plugin_collects ? "plugin" : "scripts");
	}

hook Multa::flow_policy(f: Multa::Flow)
	{
	print f;
	}
