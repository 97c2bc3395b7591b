# The Multa::Collector plugin has no scripts of its own: the multa package
# (zeek_scripts/collect-plugin.zeek) starts and uses it.
