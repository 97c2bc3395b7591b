##! Classify a trace with a running bridge:
##! ``zeek -r trace.pcap <multa> <multa>/offline``.
##! Starts the WebSocket server, holds the trace until a bridge connects,
##! sends every flow at the end of the trace and exits once the results
##! are in (see trace.zeek). Not for live traffic.

# The whole package, with the collector __load__.zeek picks.
@load ./__load__

redef Multa::offline_wait_for_bridge = T;
redef Multa::listen_websocket = T;
redef exit_only_after_terminate = T;
