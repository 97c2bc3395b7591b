# @TEST-DOC: With max_age, a connection still below max_packets is sent once it is that old, while it goes on, and never again; the others are sent as usual. The same with either collector (btest -a plugin): each hands over aged flows at most 10 s after they reach the age.
# @TEST-REQUIRES: test -f "$TRACES/stratosphere/test19-malicious-ssh/malicious-ssh-bruteforce.pcap"
# @TEST-EXEC: zeek -b -C -r $TRACES/stratosphere/test19-malicious-ssh/malicious-ssh-bruteforce.pcap $PACKAGE %INPUT > output
# @TEST-EXEC: btest-diff output

redef Multa::pause_without_bridge = F;
redef Multa::max_packets = 64;
redef ConnThreshold::generic_packet_thresholds += Multa::packet_thresholds(64);
redef Multa::max_age = 3 secs;

type Sent: record {
	packets: count;
	age: interval;
};

global sent: table[string] of Sent;
global twice = 0;
global early = 0;
global wrong_age = 0;

hook Multa::flow_policy(f: Multa::Flow)
	{
	if ( f$uid in sent )
		++twice;

	sent[f$uid] = Sent($packets=|f$sizes|, $age=network_time() - f$ts);
	}

# A flow with fewer than max_packets packets from a connection that had
# more was sent before the connection ended: by age. It must have been at
# least max_age old then, and not more than 10 s older.
event connection_state_remove(c: connection) &priority=-10
	{
	if ( c$uid !in sent )
		return;

	local s = sent[c$uid];
	if ( s$packets < Multa::max_packets && c$orig$num_pkts + c$resp$num_pkts > s$packets )
		{
		++early;
		if ( s$age < Multa::max_age || s$age > Multa::max_age + 10 secs )
			++wrong_age;
		}
	}

event zeek_done()
	{
	print fmt("flows sent: %d, sent twice: %d", |sent|, twice);
	print fmt("sent by age while the connection went on: at least 5: %s", early >= 5);
	print fmt("of those, sent before max_age or over 10 s after it: %d", wrong_age);
	}
