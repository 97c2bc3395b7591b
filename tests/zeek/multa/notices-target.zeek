# @TEST-DOC: A flood from many sources to one target raises one Multa::Threat notice for the target (Multa::target_classes), not one per source; a class outside it still gets one per source and target.
# @TEST-REQUIRES: $PYTHON -c 'import multa_broker'
# @TEST-EXEC: $PYTHON -c "from pathlib import Path; from multa_broker.bench.traces import tiny_trace; tiny_trace(40, Path('flood.pcap'))"
# @TEST-EXEC: zeek -b -C -r flood.pcap $PACKAGE %INPUT > output
# @TEST-EXEC: btest-diff output
# @TEST-EXEC: zeek-cut note sub dst p < notice.log | sort | uniq -c > notice.out
# @TEST-EXEC: btest-diff notice.out

redef Multa::pause_without_bridge = F;
redef Multa::max_age = 1 day;

global sent: vector of Multa::Flow;

hook Multa::flow_policy(f: Multa::Flow)
	{
	sent += f;
	}

# 40 two-packet connections from 40 sources to one target: sources below
# 10.0.0.30 called dos, the other 10 c2 (identified per source and target).
# By address, not by the order flows left: that differs between collectors.
event Pcap::file_done(path: string)
	{
	Multa::flush_all("test");

	local results: vector of Multa::Result;
	for ( i, f in sent )
		results += Multa::Result($uid=f$uid, $model="canned-1", $tasks=vector("threat"),
		    $labels=vector(f$orig_h < 10.0.0.30 ? "dos" : "c2"), $scores=vector(0.95));

	event Multa::results(results);
	}

event zeek_done()
	{
	print fmt("flows sent: %d", |sent|);
	}
