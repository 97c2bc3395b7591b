# @TEST-DOC: The package and its offline switch load and type-check (zeek -a), bare and with Zeek's default scripts.
# @TEST-EXEC: zeek -a -b $PACKAGE
# @TEST-EXEC: zeek -a $PACKAGE
# @TEST-EXEC: zeek -a -b $PACKAGE $PACKAGE/offline.zeek
# @TEST-EXEC: zeek -a -b $PACKAGE %INPUT
# @TEST-EXEC: test ! -s .stderr || btest-diff .stderr

# A user's redefs after loading the package are accepted.
redef Multa::max_packets = 32;
redef ConnThreshold::generic_packet_thresholds += Multa::packet_thresholds(32);
redef Multa::shards = 4;
redef Multa::min_packets = 2;
