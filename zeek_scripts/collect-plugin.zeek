##! multa's C++ collector: where the optional Multa::Collector plugin
##! (zeek_plugin/) is loaded (see :zeek:see:`Multa::plugin_collects`), it
##! does the per-packet part with the script collector's semantics and
##! hands each flow over once (:zeek:see:`Multa::collected`); these
##! scripts start it, pause it and ask it for flows at
##! :zeek:see:`Multa::max_age` and :zeek:see:`Multa::flush_all`.

@load ./main
@load ./collect

module Multa;

export {
	## Raised by the plugin's collector for each flow to be sent.
	global collected: event(f: Flow);
}

event Multa::collected(f: Flow)
	{
	send(f);
	}

function flush_open_flows()
	{
	for ( _, f in collector_flush(0 secs) as vector of Flow )
		send(f);
	}

function switch_collector(on: bool)
	{
	collector_set_enabled(on);
	}

# How often the collector is asked for flows older than Multa::max_age:
# at most 10 s late, like the expiry of `pending` in the script collector.
function collector_check_interval(): interval
	{
	return max_age > 0 secs && max_age < 10 secs ? max_age : 10 secs;
	}

# Multa::max_age: hands over flows at least that old (the script collector
# keeps them in `pending`, whose expiry does this).
event collector_age_check()
	{
	if ( max_age > 0 secs )
		{
		for ( _, f in collector_flush(max_age) as vector of Flow )
			send(f);
		}

	schedule collector_check_interval() { collector_age_check() };
	}

event zeek_init() &priority=4
	{
	collector_start(max_packets);
	collector_set_enabled(collecting);
	schedule collector_check_interval() { collector_age_check() };
	}
