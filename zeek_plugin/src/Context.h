// Host context in C++: multa_broker/context.py's ContextTracker, line for
// line, for the package's new_connection handler (zeek_scripts/context.zeek)
// where the plugin collects. Same window, cap, FIFO expiry and sweep, so the
// counts equal the scripts' and the offline extractor's.
#pragma once

#include <zeek/IPAddr.h>

#include <array>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace multa::context {

constexpr double WINDOW_S = 60.0;       // context.WINDOW_S
constexpr size_t MAX_ENTRIES = 1000;    // context.MAX_ENTRIES
constexpr uint64_t SWEEP_EVERY = 65536; // context.ContextTracker.SWEEP_EVERY

// An address as Zeek keeps it (IPv4 mapped into IPv6), in two words.
struct Addr {
    uint64_t hi = 0, lo = 0;
    explicit Addr(const zeek::IPAddr& a);
    Addr() = default;
    bool operator==(const Addr& o) const { return hi == o.hi && lo == o.lo; }
};

// A responder endpoint: address, and port number with its transport.
struct Endpoint {
    Addr h;
    uint32_t p = 0;
    bool operator==(const Endpoint& o) const { return h == o.h && p == o.p; }
};

struct AddrHash {
    size_t operator()(const Addr& a) const { return std::hash<uint64_t>()(a.hi * 0x9E3779B97F4A7C15ULL ^ a.lo); }
};

struct EndpointHash {
    size_t operator()(const Endpoint& e) const { return AddrHash()(e.h) * 31 + e.p; }
};

// A FIFO of recent starts: a vector whose consumed front is cut off now and then.
template<typename T>
struct Ring {
    std::vector<T> items;
    size_t head = 0;

    size_t size() const { return items.size() - head; }
    bool empty() const { return head == items.size(); }
    const T& front() const { return items[head]; }
    void push(const T& t) { items.push_back(t); }
    void pop() {
        if ( ++head == items.size() ) {
            std::vector<T>().swap(items);
            head = 0;
        }
        else if ( head >= 64 && head * 2 >= items.size() ) {
            items.erase(items.begin(), items.begin() + static_cast<std::ptrdiff_t>(head));
            head = 0;
        }
    }
};

// Counts a key's occurrences; a key whose count falls to 0 leaves.
template<typename K, typename H>
using Counts = std::unordered_map<K, uint32_t, H>;

struct OrigStart {
    double ts;
    Endpoint ep;
};

struct Orig {
    Ring<OrigStart> starts;
    Counts<Addr, AddrHash> hosts;
    std::unordered_map<uint32_t, uint32_t> ports;
    Counts<Endpoint, EndpointHash> endpoints;
    double newest = 0.0;
};

struct RespStart {
    double ts;
    Addr orig;
};

struct Resp {
    Ring<RespStart> starts;
    Counts<Addr, AddrHash> origs;
    double newest = 0.0;
};

class Tracker {
public:
    // Context of a connection starting at ts (orig_conns, orig_hosts,
    // orig_ports, orig_same, resp_conns, resp_origs); then records its start.
    std::array<uint64_t, 6> Start(double ts, const Addr& orig, const Endpoint& resp);
    // Forgets everything.
    void Reset();

private:
    void Sweep(double now);

    std::unordered_map<Addr, Orig, AddrHash> origs;
    std::unordered_map<Endpoint, Resp, EndpointHash> endpoints;
    uint64_t since_sweep = 0;
};

Tracker& tracker();

} // namespace multa::context
