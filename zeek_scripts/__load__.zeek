##! multa: per-connection packet sequences to an external multi-task
##! classifier, verdicts back into multa.log and notices. See docs/zeek.md.
##! ``offline.zeek`` is not loaded here: it is for ``zeek -r`` only.

@load ./main
@load ./context
@load ./collect

# Load either the C++ collector's scripts (the Multa::Collector plugin is
# loaded) or the script collector.
@if ( Multa::plugin_collects )
@load ./collect-plugin
@else
@load ./collect-scripts
@endif

@load ./transport
@load ./results
@load ./notices
@load ./trace
