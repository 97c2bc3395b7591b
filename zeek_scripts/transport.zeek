##! The link to the bridge: the WebSocket server, result subscriptions and
##! bridge presence.
##!
##! Layout: the node that runs the WebSocket server (the manager in a
##! cluster, see :zeek:see:`Multa::websocket_node`) counts the connected
##! WebSocket clients whose subscriptions cover
##! :zeek:see:`Multa::flow_topic` (standalone: also Broker peers) and
##! tells every worker with
##! :zeek:see:`Multa::bridge_status`. Workers publish flows with
##! :zeek:see:`Cluster::publish`; the cluster backend carries them to the
##! server node and its WebSocket clients. Each worker subscribes to its own
##! result topic, so results come back to the worker that holds the
##! connection's state.

@load ./main
@load ./collect

module Multa;

export {
	## Whether this node runs the package's WebSocket server.
	global is_websocket_node: function(): bool;

	## Bridges this node knows of (from its own WebSocket clients, or
	## from the WebSocket node in a cluster).
	global bridges_connected = 0;
}

# WebSocket clients on this node that subscribed to the flow topic.
global bridge_ids: set[string];

function is_websocket_node(): bool
	{
	if ( websocket_node != "" )
		return Cluster::node == websocket_node;

	if ( Cluster::is_enabled() )
		return Cluster::local_node_type() == Cluster::MANAGER;

	return T;
	}

# A client is a bridge if one of its subscriptions receives our flows:
# a prefix of the flow topic, or a shard topic below it.
function is_bridge(subscriptions: string_vec): bool
	{
	for ( _, s in subscriptions )
		{
		if ( starts_with(flow_topic, s) || starts_with(s, flow_topic) )
			return T;
		}

	return F;
	}

function update_collection()
	{
	set_collecting(bridges_connected > 0 || ! pause_without_bridge);
	}

function announce_bridges()
	{
	local n = |bridge_ids|;

	if ( Cluster::is_enabled() )
		Cluster::publish(Cluster::worker_topic, Multa::bridge_status, n);

	event Multa::bridge_status(n);
	}

event Multa::bridge_status(bridges: count)
	{
	if ( bridges > 0 && bridges_connected == 0 )
		Reporter::info(fmt("multa: bridge connected (%d); collecting", bridges));
	else if ( bridges == 0 && bridges_connected > 0 )
		Reporter::info(fmt("multa: no bridge connected%s",
		    pause_without_bridge ? "; collection paused" : ""));

	bridges_connected = bridges;
	update_collection();
	}

event Cluster::websocket_client_added(endpoint: Cluster::EndpointInfo, subscriptions: string_vec)
	{
	if ( ! is_bridge(subscriptions) )
		return;

	add bridge_ids[endpoint$id];
	announce_bridges();
	}

event Cluster::websocket_client_lost(endpoint: Cluster::EndpointInfo, code: count, reason: string)
	{
	if ( endpoint$id !in bridge_ids )
		return;

	delete bridge_ids[endpoint$id];
	announce_bridges();
	}

# A standalone node also counts Broker peers: the bridge's native transport
# peers with Broker::listen instead of using the WebSocket API. In a
# cluster, Broker peers are other nodes.
event Broker::peer_added(endpoint: Broker::EndpointInfo, msg: string)
	{
	if ( Cluster::is_enabled() )
		return;

	add bridge_ids[endpoint$id];
	announce_bridges();
	}

event Broker::peer_lost(endpoint: Broker::EndpointInfo, msg: string)
	{
	if ( endpoint$id !in bridge_ids )
		return;

	delete bridge_ids[endpoint$id];
	announce_bridges();
	}

# A worker that (re)joins learns the current bridge count.
event Cluster::node_up(name: string, id: string)
	{
	if ( ! is_websocket_node() || name !in Cluster::nodes )
		return;

	if ( Cluster::nodes[name]$node_type == Cluster::WORKER )
		Cluster::publish(Cluster::node_topic(name), Multa::bridge_status, |bridge_ids|);
	}

function pause_changed(id: string, new_value: bool): bool
	{
	# Runs before the option takes the new value.
	set_collecting(bridges_connected > 0 || ! new_value);
	return new_value;
	}

function start_websocket_server()
	{
	local opts = Cluster::WebSocketServerOptions($listen_addr=websocket_addr,
	    $listen_port=websocket_port);

	if ( websocket_tls_cert_file != "" || websocket_tls_key_file != "" )
		{
		local tls = Cluster::WebSocketTLSOptions($cert_file=websocket_tls_cert_file,
		    $key_file=websocket_tls_key_file);

		if ( websocket_tls_ca_file != "" )
			{
			tls$ca_file = websocket_tls_ca_file;
			tls$enable_peer_verification = T;
			}

		opts$tls_options = tls;
		}

	if ( Cluster::listen_websocket(opts) )
		Reporter::info(fmt("multa: WebSocket server for the bridge on %s://%s:%s/v1/messages/json",
		    websocket_tls_cert_file != "" ? "wss" : "ws", websocket_addr,
		    port_to_count(websocket_port)));
	else
		Reporter::error(fmt("multa: could not start the WebSocket server on %s:%s",
		    websocket_addr, websocket_port));
	}

event zeek_init() &priority=3
	{
	Option::set_change_handler("Multa::pause_without_bridge", pause_changed);

	if ( Cluster::is_enabled() )
		{
		# Only nodes that see traffic send flows and get results. The
		# topic has no trailing slash (the wire contract); a node whose
		# name extends another's also sees that node's results and drops
		# them as unknown uids.
		if ( Cluster::local_node_type() == Cluster::WORKER )
			Cluster::subscribe(result_topic + "/" + Cluster::node);
		}
	else
		Cluster::subscribe(result_topic);

	if ( listen_websocket && is_websocket_node() )
		start_websocket_server();

	update_collection();
	}
