# @TEST-DOC: Without a bridge (and pause_without_bridge on, the default) nothing is collected or sent; switching the option at run time through the Config framework resumes collection for new connections.
# @TEST-REQUIRES: test -f "$TRACES/ndpi/pcap/synscan.pcap"
# @TEST-EXEC: zeek -b -C -r $TRACES/ndpi/pcap/synscan.pcap $PACKAGE %INPUT > output
# @TEST-EXEC: btest-diff output

global sent = 0;
global seen = 0;
global resumed = F;

hook Multa::flow_policy(f: Multa::Flow)
	{
	++sent;
	}

event new_connection(c: connection)
	{
	++seen;

	if ( seen == 100 && ! resumed )
		{
		resumed = T;
		print fmt("%d connections, %d sent, collecting=%s", seen, sent, Multa::is_collecting());
		Config::set_value("Multa::pause_without_bridge", F);
		}
	}

event zeek_done()
	{
	print fmt("%d connections, %d sent, collecting=%s", seen, sent, Multa::is_collecting());
	}
