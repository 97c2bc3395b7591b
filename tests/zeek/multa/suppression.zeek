# @TEST-DOC: Repeated Threat verdicts obey the Notice framework's suppression, which the package mirrors so that suppressed notices are never built: one notice per identifier by default, every one where a policy turns suppression off. The default four tasks in their usual order (a single constructor) log exactly as in any other order (the loop).
# @TEST-REQUIRES: test -f "$TRACES/ndpi/pcap/tcp_scan.pcapng"
# @TEST-EXEC: zeek -b -C -r $TRACES/ndpi/pcap/tcp_scan.pcapng $PACKAGE %INPUT > output
# @TEST-EXEC: btest-diff output
# @TEST-EXEC: zeek-cut note sub src dst p < notice.log > notice.out
# @TEST-EXEC: btest-diff notice.out

redef Multa::pause_without_bridge = F;
# Keeps open connections in the pending table, so flush_all() can send them.
redef Multa::max_age = 1 day;

# c2 notices are never suppressed.
hook Notice::policy(n: Notice::Info)
	{
	if ( n$note == Multa::Threat && n?$sub && n$sub == "c2" )
		n$suppress_for = 0 secs;
	}

global sent: vector of Multa::Flow;

hook Multa::flow_policy(f: Multa::Flow)
	{
	sent += f;
	}

# Every flow of the trace goes from 192.168.1.178 to 192.168.1.2: dos
# notices share one identifier (originator, responder, class).
function verdict(uid: string, threat: string): Multa::Result
	{
	return Multa::Result($uid=uid, $model="m-1",
	    $tasks=vector("service", "encrypted", "tunnel", "threat"),
	    $labels=vector("other", "cleartext", "none", threat),
	    $scores=vector(0.5, 0.6, 0.7, 0.99));
	}

event Pcap::file_done(path: string)
	{
	Multa::flush_all("test");

	local results: vector of Multa::Result;
	for ( i, f in sent )
		results += verdict(f$uid, i < 4 ? "dos" : "c2");

	print fmt("%d flows: 4 dos, %d c2", |sent|, |sent| - 4);
	event Multa::results(results);
	}

event zeek_init()
	{
	local id = conn_id($orig_h=10.0.0.1, $orig_p=1/tcp, $resp_h=10.0.0.2, $resp_p=2/tcp);
	local ordered = verdict("C1", "scan");
	local shuffled = Multa::Result($uid="C1", $model="m-1",
	    $tasks=vector("threat", "tunnel", "service", "encrypted"),
	    $labels=vector("scan", "none", "other", "cleartext"),
	    $scores=vector(0.99, 0.7, 0.5, 0.6));
	local a = Multa::make_info(ordered, id, double_to_time(1.0), 3);
	local b = Multa::make_info(shuffled, id, double_to_time(1.0), 3);
	print a;
	print fmt("same record for both orders: %s", cat(a) == cat(b));
	}

# NOTICE() raises Notice::suppressed for each notice it suppresses; the
# mirror keeps the three repeated dos notices from being built at all.
global framework_suppressed = 0;

event Notice::suppressed(n: Notice::Info)
	{
	++framework_suppressed;
	}

event zeek_done()
	{
	print fmt("notices suppressed inside NOTICE(): %d", framework_suppressed);
	}
