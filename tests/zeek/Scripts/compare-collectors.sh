#!/bin/bash
# compare-collectors.sh SCRIPT: for each trace, the flows that the scripts'
# collector and the Multa::Collector plugin's send (SCRIPT prints them), as
# one line per trace and max_packets (multa.plugin btest).
SCRIPT=$1
run() {  # run COLLECTOR TRACE N
    MULTA_COLLECTOR=$1 ZEEK_PLUGIN_PATH=$PLUGIN_DIR ZEEK_PLUGIN_ACTIVATE=Multa::Collector \
        zeek -b -C -r "$TRACES/$2" $PACKAGE "$SCRIPT" "Multa::max_packets=$3" >$1.out
}
for t in ndpi/pcap/synscan.pcap stratosphere/test19-malicious-ssh/malicious-ssh-bruteforce.pcap stratosphere/test12-icmp-portscan.pcap zeek-traces/wikipedia.pcap zeek-traces/var-services-std-ports.pcap zeek-traces/tunnels/Teredo.pcap zeek-traces/tunnels/gre-sample.pcap zeek-traces/ipv6-http-atomic-frag.pcap zeek-traces/dns53.pcap zeek-traces/tcp/handshake-reorder.pcap zeek-traces/tcp/missing-syn.pcap zeek-traces/tcp/one-sided-2745.pcap; do
    for n in 20 32; do
        run scripts $t $n
        run plugin $t $n
        # Flows are compared as sets: at connection end, the two collectors'
        # events reach the batch in a different order.
        grep '^\[' scripts.out | sort >s
        grep '^\[' plugin.out | sort >p
        longest=$(sed 's/.*sizes=\[\([^]]*\)\].*/\1/' s | awk -F, '{ if ( NF > m ) m = NF } END { print m }')
        who=$(grep -h '^collector' scripts.out plugin.out | cut -d' ' -f2 | paste -sd/ -)
        echo "$t n=$n: $(wc -l <s) flows, longest $longest, $who, $(diff s p | grep -c '^[<>]') lines differ"
    done
done
