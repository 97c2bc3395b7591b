# @TEST-DOC: Offline classification: zeek -r with offline.zeek waits for a (fake) bridge over the WebSocket API, sends every flow in batches of at most batch_size, logs a result for each and exits by itself.
# @TEST-REQUIRES: test -f "$TRACES/ndpi/pcap/synscan.pcap"
# @TEST-REQUIRES: $PYTHON -c 'import websockets'
# @TEST-PORT: MULTA_PORT
#
# @TEST-EXEC: btest-bg-run bridge "$PYTHON $SCRIPTS/fake-bridge.py ws://127.0.0.1:${MULTA_PORT%/tcp}/v1/messages/json batches.txt"
# @TEST-EXEC: btest-bg-run zeek "zeek -b -C -r $TRACES/ndpi/pcap/synscan.pcap $PACKAGE $PACKAGE/offline.zeek %INPUT"
# @TEST-EXEC: btest-bg-wait 90
# @TEST-EXEC: awk '{n += $2; if ($2 > 16) big++} END {print "flows received:", n, "batches over 16:", big+0}' bridge/batches.txt > output
# @TEST-EXEC: echo "multa.log rows: $(zeek-cut uid < zeek/multa.log | wc -l)" >> output
# @TEST-EXEC: echo "distinct uids: $(zeek-cut uid < zeek/multa.log | sort -u | wc -l)" >> output
# @TEST-EXEC: echo "conn.log rows: $(zeek-cut uid < zeek/conn.log | wc -l)" >> output
# @TEST-EXEC: btest-diff output
# @TEST-EXEC: zeek-cut uid id.orig_h id.resp_h id.resp_p packets model service threat threat_score extra_tasks extra_labels < zeek/multa.log | sort | head -20 > multa.out
# @TEST-EXEC: zeek-cut packets service threat extra_labels < zeek/multa.log | sort | uniq -c >> multa.out
# @TEST-EXEC: btest-diff multa.out
# @TEST-EXEC: zeek-cut uid < zeek/conn.log | sort > conn-uids
# @TEST-EXEC: zeek-cut uid < zeek/multa.log | sort | comm -13 conn-uids - > not-in-conn
# @TEST-EXEC: test ! -s not-in-conn

redef Multa::websocket_port = to_port(getenv("MULTA_PORT"));
redef Multa::batch_size = 16;
