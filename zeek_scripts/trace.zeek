##! Offline classification of a trace (``zeek -r``) with a running bridge.
##! Off unless :zeek:see:`Multa::offline_wait_for_bridge` is set; load
##! ``offline.zeek`` to turn it on.
##!
##! 1. At startup, packet processing is suspended until a bridge connects
##!    to the WebSocket server. If none does within
##!    :zeek:see:`Multa::bridge_wait_timeout`, Zeek stops with a reporter
##!    error before reading the trace.
##! 2. At the end of the trace (:zeek:see:`Pcap::file_done`) connections
##!    that are still open have not been removed yet, so every pending flow
##!    with :zeek:see:`Multa::min_packets` is sent then.
##! 3. Zeek terminates once every sent flow has its result, or after
##!    :zeek:see:`Multa::offline_result_timeout` (with a reporter warning
##!    naming the number of flows left without one), or when the last
##!    bridge leaves.
##!
##! Both timeouts run on wall-clock time in a small watcher shell that
##! sends Zeek SIGTERM: Zeek's timers, and the input framework that
##! ``Exec::run`` needs, follow network time, which stands still while
##! processing is suspended and after a trace has ended. The watcher
##! exits as soon as its wait is cancelled or Zeek is gone.

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
# Stop file of the running watcher; creating it cancels the watcher.
global watcher_stop = "";

# Sends Zeek SIGTERM after *after* of wall-clock time unless
# cancel_watcher() runs first.
function start_watcher(after: interval)
	{
	local tmp = getenv("TMPDIR") != "" ? getenv("TMPDIR") : "/tmp";
	watcher_stop = fmt("%s/multa-%d-%s.stop", tmp, getpid(), unique_id(""));
	local stop = safe_shell_quote(watcher_stop);
	local pid = getpid();
	local ticks = double_to_count(interval_to_double(after) * 10.0);

	system(fmt("i=0; while [ $i -lt %d ]; do if [ -e %s ]; then rm -f %s; exit 0; fi; kill -0 %d 2>/dev/null || exit 0; sleep 0.1; i=$((i+1)); done; kill -TERM %d",
	    ticks, stop, stop, pid, pid));
	}

function cancel_watcher()
	{
	if ( watcher_stop == "" )
		return;

	close(open(watcher_stop));
	watcher_stop = "";
	}

function finish(why: string)
	{
	if ( finished )
		return;

	finished = T;
	hold_inflight = F;
	cancel_watcher();

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
	start_watcher(bridge_wait_timeout);
	}

event Multa::bridge_status(bridges: count) &priority=-5
	{
	if ( ! offline_active )
		return;

	if ( waiting_for_bridge && bridges > 0 )
		{
		waiting_for_bridge = F;
		cancel_watcher();
		continue_processing();
		}
	else if ( trace_ended && bridges == 0 )
		finish("the bridge left before all results came back");
	}

# The watcher's SIGTERM (or any other shutdown) ends up here.
event zeek_done()
	{
	if ( ! offline_active || finished )
		return;

	# No cancel_watcher() here: the watcher may be what stopped Zeek, and
	# it exits by itself once Zeek is gone.
	if ( waiting_for_bridge )
		Reporter::error(fmt("multa: no bridge connected within %s (Multa::bridge_wait_timeout); stopped before reading the trace",
		    bridge_wait_timeout));
	else if ( trace_ended && |inflight| > 0 )
		Reporter::warning(fmt("multa: gave up waiting for results after %s (Multa::offline_result_timeout); %d flows got no result",
		    offline_result_timeout, |inflight|));
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
		start_watcher(offline_result_timeout);
	}

event Multa::result_handled()
	{
	if ( offline_active && trace_ended && |inflight| == 0 )
		finish("all results in");
	}
