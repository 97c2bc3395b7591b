# @TEST-DOC: The Zeek examples in docs/zeek.md type-check against the package.
# @TEST-EXEC: zeek -a -b $PACKAGE %INPUT

@load base/frameworks/netcontrol
@load base/utils/site

redef Multa::listen_websocket = T;
redef Multa::min_packets = 2;
redef Multa::threat_thresholds += { ["c2"] = 0.95 };
redef Multa::max_packets = 32;
redef ConnThreshold::generic_packet_thresholds += Multa::packet_thresholds(32);

event NetControl::init()
	{
	NetControl::activate(NetControl::create_debug(T), 0);
	}

event Multa::classified(info: Multa::Info, r: Multa::Result)
	{
	if ( info?$threat && info$threat == "bruteforce" && info$threat_score >= 0.97 )
		NetControl::drop_address(info$id$orig_h, 10 min);
	}

hook Multa::flow_policy(f: Multa::Flow)
	{
	if ( f$resp_p == 53/udp && Site::is_local_addr(f$orig_h) )
		break;
	}
