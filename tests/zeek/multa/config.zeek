# @TEST-DOC: Notice thresholds and class sets are options: changed at run time through the Config framework, the next verdicts follow them.
# @TEST-REQUIRES: test -f "$TRACES/zeek-traces/wikipedia.pcap"
# @TEST-EXEC: zeek -b -C -r $TRACES/zeek-traces/wikipedia.pcap $PACKAGE %INPUT > output
# @TEST-EXEC: btest-diff output
# @TEST-EXEC: zeek-cut note sub msg < notice.log > notice.out
# @TEST-EXEC: btest-diff notice.out

redef Multa::pause_without_bridge = F;
# Keeps open connections in the pending table, so flush_all() can send them.
redef Multa::max_age = 1 day;

global uids: vector of string;

hook Multa::flow_policy(f: Multa::Flow)
	{
	uids += f$uid;
	}

function verdict(uid: string, tunnel: string, score: double, threat: string): Multa::Result
	{
	return Multa::Result($uid=uid, $model="m", $tasks=vector("tunnel", "threat"),
	    $labels=vector(tunnel, threat), $scores=vector(score, score));
	}

global classified = 0;

event phase2()
	{
	Config::set_value("Multa::tunnel_threshold", 0.8);
	Config::set_value("Multa::tunnel_classes", set("vpn", "tor", "proxy"));
	Config::set_value("Multa::benign_threat_classes", set("benign", "unknown", "dos"));
	print "tunnel_threshold", Multa::tunnel_threshold;
	# Now: vpn at 0.85 and proxy raise notices, dos does not.
	event Multa::results(vector(verdict(uids[3], "vpn", 0.85, "benign"),
	    verdict(uids[4], "proxy", 0.95, "benign"), verdict(uids[5], "none", 0.99, "dos")));
	}

event Pcap::file_done(path: string)
	{
	Multa::flush_all("test");
	# In a fixed order: the two collectors send flows at a connection's
	# end and at flush_all() in different orders.
	sort(uids, strcmp);
	# Defaults: vpn at 0.85 is below 0.9, proxy is no tunnel class, dos is a threat.
	event Multa::results(vector(verdict(uids[0], "vpn", 0.85, "benign"),
	    verdict(uids[1], "proxy", 0.95, "benign"), verdict(uids[2], "none", 0.99, "dos")));
	}

# Notices are raised when Multa::classified is handled: change the options
# once the first three verdicts are through.
event Multa::classified(info: Multa::Info, r: Multa::Result) &priority=-10
	{
	if ( ++classified == 3 )
		event phase2();
	}
