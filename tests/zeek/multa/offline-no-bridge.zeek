# @TEST-DOC: Offline mode without a bridge: after bridge_wait_timeout Zeek says so on the reporter, reads the trace unclassified and exits.
# @TEST-REQUIRES: test -f "$TRACES/http/get.pcap"
# @TEST-PORT: MULTA_PORT
# @TEST-EXEC: btest-bg-run zeek "zeek -b -r $TRACES/http/get.pcap $PACKAGE $PACKAGE/offline.zeek %INPUT"
# @TEST-EXEC: btest-bg-wait 30
# @TEST-EXEC: zeek-cut level message < zeek/reporter.log | grep multa > reporter.out
# @TEST-EXEC: btest-diff reporter.out
# @TEST-EXEC: test -f zeek/conn.log
# @TEST-EXEC: test ! -f zeek/multa.log

redef Multa::websocket_port = to_port(getenv("MULTA_PORT"));
redef Multa::bridge_wait_timeout = 1 sec;
