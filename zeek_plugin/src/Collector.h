// multa's packet collector: the first Multa::max_packets packets of every
// connection (IP length, direction, packet time), kept in C++ and handed to
// the package's scripts once per connection as a Multa::Flow. It replaces
// the scripts' per-packet conn_generic_packet_threshold_crossed handler and
// keeps its semantics (zeek_scripts/collect-scripts.zeek is the reference).
#pragma once

#include <zeek/Tag.h>
#include <zeek/Val.h>
#include <zeek/analyzer/Analyzer.h>

#include <cstdint>
#include <list>
#include <string>
#include <vector>

namespace multa::collector {

// Why collection of a flow ends.
enum class Reason : uint8_t {
    REACHED, // reached Multa::max_packets: sent
    ENDED,   // the connection ended first: sent with Multa::min_packets
    FLUSHED, // Multa::collector_flush() (max_age, the end of a trace): sent with
             // Multa::min_packets; the connection goes on uncollected
    STOPPED, // a later packet had IP length 0: the prefix before it, sent with
             // Multa::min_packets
};

class Collector final : public zeek::analyzer::Analyzer {
public:
    explicit Collector(zeek::Connection* conn);
    ~Collector() override;

    static zeek::analyzer::Analyzer* Instantiate(zeek::Connection* conn) { return new Collector(conn); }

    void Done() override;
    void FlipRoles() override;

    // Ends collection now if the first packet is at least min_age old;
    // returns the flow where it is to be sent.
    zeek::RecordValPtr FlushIfOlder(double now, double min_age);

protected:
    void DeliverPacket(int len, const u_char* data, bool is_orig, uint64_t seq, const zeek::IP_Hdr* ip,
                       int caplen) override;

private:
    enum class Phase : uint8_t { NEW, COLLECTING, FINISHED };

    // Ends collection; returns the flow where it is to be sent (the
    // checks of zeek_scripts/collect-scripts.zeek's complete() and min_packets).
    zeek::RecordValPtr End(Reason reason);
    // Ends collection, raising Multa::collected where the flow is to be sent.
    void Emit(Reason reason);
    zeek::RecordValPtr MakeFlow() const;
    // Ends collection and leaves the analyzer tree.
    void Finish();

    Phase phase = Phase::NEW;
    bool ending = false; // in Done()
    std::list<Collector*>::iterator live_pos; // in live(), while COLLECTING
    uint64_t epoch = 0;
    double first_ts = 0.0;
    double last_ts = 0.0;
    std::vector<uint32_t> sizes;
    std::vector<uint64_t> iats;  // microseconds: may exceed 32 bits
    std::vector<bool> dirs;
};

// Settings and state shared by every collector, set by the plugin and BIFs.
struct Settings {
    bool wanted = false;  // the package asked for the collector (Multa::collector_start)
    bool enabled = false; // collecting (false while Multa::pause_without_bridge pauses)
    uint64_t epoch = 0;   // bumped on every pause and resume
    size_t max_packets = 20;
    zeek::Tag tag; // of the MULTA_COLLECTOR analyzer
};

Settings& settings();

// Collectors between their first packet and the end of collection.
std::list<Collector*>& live();

// Starts collecting on connections created from now on.
void start(size_t max_packets);
void set_enabled(bool on);
// Ends collection of every flow whose first packet is at least min_age old;
// returns those to be sent, as a vector of Multa::Flow.
zeek::ValPtr flush(double min_age);
// A Multa::Flow's sequences and host context in the packed encoding, version 1
// (Multa::PackedFlow's packed: cat_sep("|", "", sizes, dirs, iats[, ctx])).
zeek::ValPtr pack(const zeek::Val* flow);

} // namespace multa::collector
