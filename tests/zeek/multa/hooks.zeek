# @TEST-DOC: verdict_policy can rewrite or veto a verdict, log_policy filters multa.log only, classified fires for every accepted result; unknown uids, repeats and malformed results are dropped without harm.
# @TEST-REQUIRES: test -f "$TRACES/zeek-traces/wikipedia.pcap"
# @TEST-EXEC: zeek -b -C -r $TRACES/zeek-traces/wikipedia.pcap $PACKAGE %INPUT > output
# @TEST-EXEC: btest-diff output
# @TEST-EXEC: zeek-cut uid model service service_score threat threat_score < multa.log > multa.out
# @TEST-EXEC: btest-diff multa.out
# @TEST-EXEC: zeek-cut level message < reporter.log | grep multa > reporter.out
# @TEST-EXEC: btest-diff reporter.out

@load base/frameworks/reporter

redef Multa::pause_without_bridge = F;
# Keeps open connections in the pending table, so flush_all() can send them.
redef Multa::max_age = 1 day;

global uids: vector of string;

hook Multa::flow_policy(f: Multa::Flow)
	{
	uids += f$uid;
	}

hook Multa::verdict_policy(info: Multa::Info, r: Multa::Result)
	{
	if ( r$model == "veto" )
		break;

	if ( info?$service && info$service == "http" )
		info$service = "web";
	}

hook Multa::log_policy(rec: Multa::Info, id: Log::ID, filter: Log::Filter)
	{
	if ( rec$model == "unlogged" )
		break;
	}

event Multa::classified(info: Multa::Info, r: Multa::Result)
	{
	print fmt("classified %s by %s as %s/%s", info$uid, info$model, info$service, info$threat);
	}

function result(uid: string, model: string): Multa::Result
	{
	return Multa::Result($uid=uid, $model=model,
	    $tasks=vector("service", "threat"), $labels=vector("http", "benign"),
	    $scores=vector(0.9, 0.99));
	}

event zeek_init()
	{
	# A result for a flow this node never sent is dropped (and counted).
	event Multa::results(vector(Multa::Result($uid="Cnothere", $model="m",
	    $tasks=vector("threat"), $labels=vector("scan"), $scores=vector(1.0))));
	}

event Pcap::file_done(path: string)
	{
	Multa::flush_all("test");
	# In a fixed order: the two collectors send flows at a connection's
	# end and at flush_all() in different orders.
	sort(uids, strcmp);

	if ( |uids| < 4 )
		{
		print "trace has too few flows", |uids|;
		return;
		}

	# Malformed (two tasks, one label): warned about, flow stays in flight.
	event Multa::results(vector(Multa::Result($uid=uids[0], $model="bad",
	    $tasks=vector("service", "threat"), $labels=vector("http"),
	    $scores=vector(0.9, 0.99))));
	event Multa::results(vector(result(uids[0], "good"), result(uids[1], "veto"),
	    result(uids[2], "unlogged"), result(uids[3], "good")));
	# A second answer for the same flow is dropped.
	event Multa::results(vector(result(uids[0], "repeat")));
	}
