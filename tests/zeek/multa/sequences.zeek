# @TEST-DOC: The packet sequence of http/get.pcap's one connection (14 packets), and its sizes summing to conn.log's IP bytes.
# @TEST-REQUIRES: test -f "$TRACES/zeek-traces/http/get.pcap"
# @TEST-EXEC: zeek -b -r $TRACES/zeek-traces/http/get.pcap $PACKAGE %INPUT > output
# @TEST-EXEC: btest-diff output
# @TEST-EXEC: zeek-cut uid orig_pkts resp_pkts orig_ip_bytes resp_ip_bytes < conn.log > conn.out
# @TEST-EXEC: btest-diff conn.out

redef Multa::pause_without_bridge = F;

function sum(v: vector of count): count
	{
	local n = 0;
	for ( _, x in v )
		n += x;
	return n;
	}

hook Multa::flow_policy(f: Multa::Flow)
	{
	print fmt("%s %s:%s -> %s:%s ts=%.6f packets=%d bytes=%d", f$uid, f$orig_h,
	    f$orig_p, f$resp_h, f$resp_p, f$ts, |f$sizes|, sum(f$sizes));
	print "sizes", f$sizes;
	print "dirs", f$dirs;
	print "iats", f$iats;
	}
