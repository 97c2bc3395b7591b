# @TEST-DOC: Canned results for every flow of a small scan trace (raised locally, no bridge): multa.log columns, per-flow threat and tunnel notices, the per-source scan aggregate, unknown tasks in extra_*.
# @TEST-REQUIRES: test -f "$TRACES/ndpi/pcap/tcp_scan.pcapng"
# @TEST-EXEC: zeek -b -C -r $TRACES/ndpi/pcap/tcp_scan.pcapng $PACKAGE $SCRIPTS/canned-verdicts.zeek %INPUT > output
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
