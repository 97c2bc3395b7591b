# @TEST-DOC: Multa::packed_results read with from_json: the same multa.log and notices as the same verdicts sent as Multa::results (results.zeek's canned verdicts, packed by to_json here); batches from_json cannot read are dropped whole, each with a warning and counted.
# @TEST-REQUIRES: test -f "$TRACES/ndpi/pcap/tcp_scan.pcapng"
# @TEST-EXEC: zeek -b -C -r $TRACES/ndpi/pcap/tcp_scan.pcapng $PACKAGE $SCRIPTS/canned-verdicts.zeek %INPUT > output 2> stderr
# @TEST-EXEC: sed -n 's/.*\(multa: .*\)/\1/p' stderr > warnings
# @TEST-EXEC: btest-diff output
# @TEST-EXEC: btest-diff warnings
# @TEST-EXEC: btest-diff multa.log
# @TEST-EXEC: zeek-cut note sub src dst p n msg < notice.log > notice.out
# @TEST-EXEC: btest-diff notice.out

redef Multa::pause_without_bridge = F;
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
	Multa::flush_all("test");

	local results: vector of Multa::Result;
	for ( i, f in sent )
		results += canned(f, i);

	# Unreadable batches first: none of them may classify a flow.
	event Multa::packed_results(Multa::PACKED_RESULT_VERSION, "not json");
	event Multa::packed_results(Multa::PACKED_RESULT_VERSION, "[{\"uid\": \"C1\"}]");
	event Multa::packed_results(Multa::PACKED_RESULT_VERSION + 1, to_json(results));
	event Multa::packed_results(Multa::PACKED_RESULT_VERSION, to_json(results));
	}

event zeek_done()
	{
	print fmt("flows sent: %d, classified: %d", |sent|, classified);
	local dropped = Telemetry::collect_metrics("zeek", "multa_dropped*");
	for ( _, m in dropped )
		print fmt("dropped %s: %.0f", m$label_values, m$value);
	}
