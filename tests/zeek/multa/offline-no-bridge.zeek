# @TEST-DOC: Offline mode without a bridge: after bridge_wait_timeout Zeek says so on the reporter and stops without reading the trace.
# @TEST-REQUIRES: test -f "$TRACES/zeek-traces/http/get.pcap"
# @TEST-PORT: MULTA_PORT
# @TEST-EXEC: btest-bg-run zeek "zeek -b -r $TRACES/zeek-traces/http/get.pcap $PACKAGE $PACKAGE/offline.zeek %INPUT"
# @TEST-EXEC: btest-bg-wait 30
# @TEST-EXEC: zeek-cut level message < zeek/reporter.log | grep multa | sed -E "s/(127\.0\.0\.1:|port )[0-9]+/\1PORT/" > reporter.out
# @TEST-EXEC: btest-diff reporter.out
# @TEST-EXEC: test ! -f zeek/conn.log
# @TEST-EXEC: test ! -f zeek/multa.log

@load base/frameworks/reporter

redef Multa::websocket_port = to_port(getenv("MULTA_PORT"));
redef Multa::bridge_wait_timeout = 1 sec;
