# @TEST-DOC: Cluster (Broker backend): the manager runs the WebSocket server and tells the workers a bridge is there; each worker reads its own trace in offline mode, publishes its flows, and gets exactly its results back on multa/results/<node>.
# @TEST-REQUIRES: test -f "$TRACES/zeek-traces/wikipedia.pcap" && test -f "$TRACES/ndpi/pcap/tcp_scan.pcapng"
# @TEST-REQUIRES: $PYTHON -c 'import websockets'
# @TEST-PORT: BROKER_MANAGER_PORT
# @TEST-PORT: BROKER_WORKER1_PORT
# @TEST-PORT: BROKER_WORKER2_PORT
# @TEST-PORT: MULTA_PORT
#
# @TEST-EXEC: cp $FILES/cluster-layout.zeek .
# @TEST-EXEC: btest-bg-run manager "ZEEKPATH=$ZEEKPATH:.. && CLUSTER_NODE=manager zeek -b $PACKAGE $PACKAGE/offline.zeek ../common.zeek ../manager.zeek"
# @TEST-EXEC: btest-bg-run worker-1 "ZEEKPATH=$ZEEKPATH:.. && CLUSTER_NODE=worker-1 zeek -b -C -r $TRACES/zeek-traces/wikipedia.pcap $PACKAGE $PACKAGE/offline.zeek ../common.zeek"
# @TEST-EXEC: btest-bg-run worker-2 "ZEEKPATH=$ZEEKPATH:.. && CLUSTER_NODE=worker-2 zeek -b -C -r $TRACES/ndpi/pcap/tcp_scan.pcapng $PACKAGE $PACKAGE/offline.zeek ../common.zeek"
# @TEST-EXEC: btest-bg-run bridge "$PYTHON $SCRIPTS/fake-bridge.py ws://127.0.0.1:${MULTA_PORT%/tcp}/v1/messages/json batches.txt"
# @TEST-EXEC: btest-bg-wait 60
# @TEST-EXEC: for n in worker-1 worker-2; do echo "$n: conn.log $(zeek-cut uid < $n/conn.log | wc -l), multa.log $(zeek-cut uid < $n/multa.log | wc -l), flows from it at the bridge $(awk -v n=$n '$1 == n {s += $2} END {print s + 0}' bridge/batches.txt)"; done > output
# @TEST-EXEC: for n in worker-1 worker-2; do zeek-cut uid < $n/conn.log | sort > $n.conn; zeek-cut uid < $n/multa.log | sort > $n.multa; done
# @TEST-EXEC: cmp worker-1.conn worker-1.multa && cmp worker-2.conn worker-2.multa
# @TEST-EXEC: echo "manager multa.log (remote logging): $(zeek-cut uid < manager/multa.log | wc -l)" >> output
# @TEST-EXEC: btest-diff output

# @TEST-START-FILE common.zeek
@load base/frameworks/cluster
redef Log::enable_local_logging = T;
redef Log::default_rotation_interval = 0 sec;
redef Broker::disable_ssl = T;
redef Multa::websocket_port = to_port(getenv("MULTA_PORT"));
# @TEST-END-FILE

# @TEST-START-FILE manager.zeek
global down = 0;

event Cluster::node_down(name: string, id: string)
	{
	if ( ++down == 2 )
		terminate();
	}
# @TEST-END-FILE
