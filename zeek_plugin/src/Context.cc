#include "Context.h"

namespace multa::context {

namespace {

template<typename M, typename K>
void decrement(M& counts, const K& key) {
    auto it = counts.find(key);
    if ( --it->second == 0 )
        counts.erase(it);
}

void drop_front(Orig& o) {
    const auto& s = o.starts.front();
    decrement(o.hosts, s.ep.h);
    decrement(o.ports, s.ep.p);
    decrement(o.endpoints, s.ep);
    o.starts.pop();
}

void drop_front(Resp& r) {
    decrement(r.origs, r.starts.front().orig);
    r.starts.pop();
}

// Drops the starts at least a window before t0, oldest first, stopping at
// the first younger one (the definition's FIFO order).
template<typename W>
void expire(W& w, double t0) {
    while ( ! w.starts.empty() && t0 - w.starts.front().ts >= WINDOW_S )
        drop_front(w);
}

} // namespace

Addr::Addr(const zeek::IPAddr& a) {
    uint32_t b[4];
    a.CopyIPv6(b);
    hi = (uint64_t(b[0]) << 32) | b[1];
    lo = (uint64_t(b[2]) << 32) | b[3];
}

std::array<uint64_t, 6> Tracker::Start(double ts, const Addr& orig, const Endpoint& resp) {
    auto [oi, onew] = origs.try_emplace(orig);
    Orig& o = oi->second;
    if ( ! onew )
        expire(o, ts);
    auto [ri, rnew] = endpoints.try_emplace(resp);
    Resp& r = ri->second;
    if ( ! rnew )
        expire(r, ts);

    auto same = o.endpoints.find(resp);
    std::array<uint64_t, 6> ctx{o.starts.size(), o.hosts.size(), o.ports.size(),
                                same == o.endpoints.end() ? 0 : same->second, r.starts.size(), r.origs.size()};

    // Record the start; a full ring drops its oldest.
    o.starts.push({ts, resp});
    if ( onew || ts > o.newest )
        o.newest = ts;
    ++o.hosts[resp.h];
    ++o.ports[resp.p];
    ++o.endpoints[resp];
    if ( o.starts.size() > MAX_ENTRIES )
        drop_front(o);

    r.starts.push({ts, orig});
    if ( rnew || ts > r.newest )
        r.newest = ts;
    ++r.origs[orig];
    if ( r.starts.size() > MAX_ENTRIES )
        drop_front(r);

    if ( ++since_sweep >= SWEEP_EVERY )
        Sweep(ts);
    return ctx;
}

// Forgets originators and endpoints whose newest start left the window; no
// later result changes, as every start they hold would expire.
void Tracker::Sweep(double now) {
    since_sweep = 0;
    std::erase_if(origs, [now](const auto& kv) { return now - kv.second.newest >= WINDOW_S; });
    std::erase_if(endpoints, [now](const auto& kv) { return now - kv.second.newest >= WINDOW_S; });
}

void Tracker::Reset() {
    origs.clear();
    endpoints.clear();
    since_sweep = 0;
}

Tracker& tracker() {
    static Tracker t;
    return t;
}

} // namespace multa::context
