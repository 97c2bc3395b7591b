# @TEST-DOC: With shards, flows are spread over <flow_topic>/<i>-of-<K> by uid hash; no topic is a prefix of another.
# @TEST-EXEC: zeek -b $PACKAGE %INPUT > output
# @TEST-EXEC: btest-diff output

redef Multa::shards = 12;

event zeek_init()
	{
	local i = 0;
	while ( i < Multa::shards )
		{
		print Multa::shard_topic(i);
		++i;
		}

	print Multa::shard_topic(fnv1a32("CHhAvVGS1DHFjwGM9") % Multa::shards);
	}
