# @TEST-DOC: Canned results for every flow of a small scan trace (raised locally, no bridge): multa.log columns, per-flow threat and tunnel notices, the per-source scan aggregate, unknown tasks in extra_*.
# @TEST-REQUIRES: test -f "$TRACES/ndpi/pcap/tcp_scan.pcapng"
# @TEST-EXEC: zeek -b -C -r $TRACES/ndpi/pcap/tcp_scan.pcapng $PACKAGE %INPUT > output
# @TEST-EXEC: btest-diff output
# @TEST-EXEC: btest-diff multa.log
# @TEST-EXEC: zeek-cut note sub src dst p n msg < notice.log > notice.out
# @TEST-EXEC: btest-diff notice.out

redef Multa::pause_without_bridge = F;
# Keeps open connections in the pending table, so flush_all() can send them.
redef Multa::max_age = 1 day;
redef Multa::host_threshold = 4;

global sent: vector of Multa::Flow;
global classified = 0;

hook Multa::flow_policy(f: Multa::Flow)
	{
	sent += f;
	}

# Verdicts by shape, so that the baseline shows each notice path:
# short flows are scans (over the threshold), one flow is a VPN, one a
# brute force below its threshold, and every flow carries an extra task.
function canned(f: Multa::Flow, i: count): Multa::Result
	{
	local threat = |f$sizes| <= 2 ? "scan" : "benign";
	local threat_score = |f$sizes| <= 2 ? 0.95 : 0.99;
	local tunnel = "none";
	local tunnel_score = 0.99;

	if ( i == 3 )
		{
		tunnel = "vpn";
		tunnel_score = 0.97;
		}

	if ( i == 4 )
		{
		threat = "bruteforce";
		threat_score = 0.5;
		}

	return Multa::Result($uid=f$uid, $model="canned-1",
	    $tasks=vector("service", "encrypted", "tunnel", "threat", "qos"),
	    $labels=vector(f$resp_p == 80/tcp ? "http" : "other", "cleartext", tunnel, threat, "bulk"),
	    $scores=vector(0.8, 0.7, tunnel_score, threat_score, 0.25));
	}

event Multa::classified(info: Multa::Info, r: Multa::Result)
	{
	++classified;
	}

event Pcap::file_done(path: string)
	{
	# Connections still open at the end of the trace are sent now.
	Multa::flush_all("test");

	local results: vector of Multa::Result;
	for ( i, f in sent )
		results += canned(f, i);

	event Multa::results(results);
	}

event zeek_done()
	{
	print fmt("flows sent: %d, classified: %d", |sent|, classified);
	}
