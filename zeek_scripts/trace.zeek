##! Offline classification of a trace (``zeek -r``) with a running bridge.
##! Off unless :zeek:see:`Multa::offline_wait_for_bridge` is set; load
##! ``offline.zeek`` to turn it on.
##!
##! 1. At startup, packet processing is suspended until a bridge connects
##!    to the WebSocket server, or :zeek:see:`Multa::bridge_wait_timeout`
##!    passes (then the trace is read without classification, with a
##!    reporter error).
##! 2. At the end of the trace (:zeek:see:`Pcap::file_done`) connections
##!    that are still open have not been removed yet, so every pending flow
##!    with :zeek:see:`Multa::min_packets` is sent then.
##! 3. Zeek terminates once every sent flow has its result, or after
##!    :zeek:see:`Multa::offline_result_timeout` (with a reporter warning
##!    naming the number of flows left without one), or when the last
##!    bridge leaves.

@load base/utils/exec
@load ./main
@load ./collect
@load ./transport
@load ./results

module Multa;

# Offline mode is on for this run.
global offline_active = F;
# Packet processing is suspended until a bridge connects.
global waiting_for_bridge = F;
global trace_ended = F;
global finished = F;

global wall_timeout: event(what: string);

## Raises wall_timeout(*what*) after *after* of wall-clock time. Zeek's
## timers follow network time, which stands still while processing is
## suspended before the first packet and after a trace has ended; a
## sleeping child process does not.
function wall_timer(after: interval, what: string)
	{
	local cmd = Exec::Command($cmd=fmt("sleep %.3f", interval_to_double(after)));

	when [cmd, what] ( local r = Exec::run(cmd) )
		{
		event Multa::wall_timeout(what);
		}
	}

function finish(why: string)
	{
	if ( finished )
		return;

	finished = T;
	hold_inflight = F;

	if ( |inflight| > 0 )
		Reporter::warning(fmt("multa: %s; %d flows got no result", why, |inflight|));

	terminate();
	}

event zeek_init() &priority=-10
	{
	if ( ! offline_wait_for_bridge || ! reading_traces() )
		return;

	if ( ! exit_only_after_terminate )
		{
		Reporter::error("multa: Multa::offline_wait_for_bridge needs exit_only_after_terminate = T (load multa's offline.zeek); not waiting for a bridge");
		return;
		}

	offline_active = T;
	hold_inflight = T;

	if ( bridges_connected > 0 )
		return;

	waiting_for_bridge = T;
	suspend_processing();
	Reporter::info(fmt("multa: waiting up to %s for a bridge to subscribe to %s on port %s",
	    bridge_wait_timeout, flow_topic, websocket_port));
	wall_timer(bridge_wait_timeout, "bridge");
	}

event Multa::bridge_status(bridges: count) &priority=-5
	{
	if ( ! offline_active )
		return;

	if ( waiting_for_bridge && bridges > 0 )
		{
		waiting_for_bridge = F;
		continue_processing();
		}
	else if ( trace_ended && bridges == 0 )
		finish("the bridge left before all results came back");
	}

event Multa::wall_timeout(what: string)
	{
	if ( what == "bridge" && waiting_for_bridge )
		{
		Reporter::error(fmt("multa: no bridge connected within %s (Multa::bridge_wait_timeout); reading the trace without classification",
		    bridge_wait_timeout));
		waiting_for_bridge = F;
		offline_active = F;
		hold_inflight = F;
		continue_processing();
		}
	else if ( what == "results" && offline_active )
		finish(fmt("gave up waiting after %s (Multa::offline_result_timeout)",
		    offline_result_timeout));
	}

event Pcap::file_done(path: string)
	{
	if ( ! offline_wait_for_bridge )
		return;

	# exit_only_after_terminate would otherwise keep Zeek running.
	if ( ! offline_active )
		{
		terminate();
		return;
		}

	trace_ended = T;
	flush_all("trace_end");

	if ( |inflight| == 0 )
		finish("trace done");
	else
		wall_timer(offline_result_timeout, "results");
	}

event Multa::result_handled()
	{
	if ( offline_active && trace_ended && |inflight| == 0 )
		finish("all results in");
	}
