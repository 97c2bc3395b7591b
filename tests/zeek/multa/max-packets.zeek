# @TEST-DOC: Raising max_packets after loading the package without registering the thresholds stops Zeek with the fix in the message; lowering it needs nothing.
# The C++ collector (btest -a plugin) needs no thresholds; multa.plugin runs it with 32.
# @TEST-REQUIRES: test "${MULTA_TEST_COLLECTOR:-scripts}" = scripts
# @TEST-EXEC-FAIL: zeek -b $PACKAGE %INPUT Multa::max_packets=32
# @TEST-EXEC: grep -o 'Multa::max_packets is.*' .stderr > fatal.out
# @TEST-EXEC: btest-diff fatal.out
# @TEST-EXEC: zeek -b $PACKAGE %INPUT Multa::max_packets=5
# @TEST-EXEC: zeek -b $PACKAGE %INPUT Multa::max_packets=40 "ConnThreshold::generic_packet_thresholds+=Multa::packet_thresholds(40)"
